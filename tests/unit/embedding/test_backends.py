"""Backend choice: unsupported combinations fail at construction, a missing fbgemm falls back to triton (CUDA)
or torch."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels import fbgemm as fbgemm_kernels
from recframe.embedding.kernels import triton as triton_kernels
from recframe.embedding.kernels.select import _logged, plan_groups

HAS_FBGEMM = fbgemm_kernels.fbgemm_import_error() is None


def table(name: str, **changes: object) -> TableConfig:
    spec = TableConfig(name=name, num_embeddings=10, embedding_dim=8, feature_names=[f"{name}_f"])
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def test_named_fbgemm_refuses_what_it_cannot_run_listing_every_table() -> None:
    tables = [table("ok"), table("adam", optimizer=SparseOptimizer(name="adam")), table("half", weight_dtype="bf16"),
              table("odd", embedding_dim=6)]
    with pytest.raises(ValueError) as err:
        EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad"), backend="fbgemm")
    message = str(err.value)
    assert "'ok'" not in message or not HAS_FBGEMM
    for name, reason in [("adam", "adam"), ("half", "bf16"), ("odd", "multiple of 4")]:
        assert f"table {name!r}" in message
        assert reason in message or not HAS_FBGEMM  # without fbgemm the reason is the failed import


@pytest.mark.skipif(not HAS_FBGEMM, reason="fbgemm_gpu does not import here")
def test_fbgemm_cpu_refuses_weight_decay() -> None:
    opt = SparseOptimizer(name="rowwise_adagrad", weight_decay=0.1, weight_decay_mode="l2")
    with pytest.raises(ValueError, match="ignores weight_decay"):
        EmbeddingBagCollection([table("t")], opt, backend="fbgemm")
    assert EmbeddingBagCollection([table("t")], opt, backend="auto").backends == {"t": "torch"}


def test_unknown_backend_and_invalid_tables_are_reported() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend 'cuda'"):
        EmbeddingBagCollection([table("t")], SparseOptimizer(name="sgd"), backend="cuda")
    bad = [table("t", pooling="max", num_embeddings=0), table("t", feature_names=["t_f"])]
    with pytest.raises(ValueError) as err:
        EmbeddingBagCollection(bad, SparseOptimizer(name="sgd", weight_decay=0.1), backend="torch")
    message = str(err.value)
    for problem in ["pooling 'max' is unknown", "num_embeddings must be > 0", "table name 't' is used twice",
                    "feature 't_f' is served by tables", "'sgd' has no weight decay", "5 problems"]:
        assert problem in message


def test_missing_fbgemm_means_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fbgemm_kernels, "fbgemm_import_error", lambda: "fbgemm_gpu does not import (ImportError)")
    ebc = EmbeddingBagCollection([table("a"), table("b")], SparseOptimizer(name="rowwise_adagrad"), backend="auto")
    assert ebc.backends == {"a": "torch", "b": "torch"}
    with pytest.raises(ValueError, match="does not import"):
        EmbeddingBagCollection([table("a")], SparseOptimizer(name="rowwise_adagrad"), backend="fbgemm")


@pytest.mark.parametrize("has_fbgemm,has_triton,device,expected", [
    (True, True, "cuda", "fbgemm"),
    (False, True, "cuda", "triton"),
    (False, False, "cuda", "torch"),
    (False, True, "cpu", "torch"),  # auto never picks triton on CPU (its interpreter is for tests)
    (True, True, "meta", "torch"),  # a meta collection (to be sharded) chooses as on the CPU: it must find one
])
def test_auto_prefers_fbgemm_then_triton_on_cuda_then_torch(monkeypatch: pytest.MonkeyPatch, has_fbgemm: bool,
                                                            has_triton: bool, device: str, expected: str) -> None:
    monkeypatch.setattr(fbgemm_kernels, "fbgemm_import_error", lambda: None if has_fbgemm else "no fbgemm")
    compiled = types.SimpleNamespace(INTERPRETED=False)
    monkeypatch.setattr(triton_kernels, "_kernels_or_error",
                        lambda: compiled if has_triton else "triton does not import (ImportError)")
    plans = plan_groups([table("a"), table("b")], SparseOptimizer(name="rowwise_adagrad"), torch.device(device),
                        "auto")
    assert [(p.backend, p.table_indices) for p in plans] == [(expected, [0, 1])]


def test_named_triton_without_triton_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_kernels, "_kernels_or_error",
                        lambda: "triton does not import (ImportError: no module named triton)")
    with pytest.raises(ValueError, match="table 'a'.*triton: triton does not import"):
        EmbeddingBagCollection([table("a")], SparseOptimizer(name="sgd"), backend="triton")


def test_without_triton_the_backend_says_so_and_auto_uses_torch() -> None:
    code = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        sys.modules["triton"] = None  # from here on, `import triton` fails
        sys.modules["fbgemm_gpu"] = None  # and fbgemm too: a GPU machine with neither
        import torch
        import recframe.embedding as emb
        from recframe.embedding.kernels import triton as triton_backend
        from recframe.embedding.kernels.select import plan_groups
        table = emb.TableConfig(name="t", num_embeddings=10, embedding_dim=8, feature_names=["f"])
        opt = emb.SparseOptimizer(name="adam")
        print(triton_backend.unsupported(table, opt, torch.device("cuda")))
        print(plan_groups([table], opt, torch.device("cuda"), "auto")[0].backend)
        try:
            emb.EmbeddingBagCollection([table], opt, backend="triton")
        except ValueError as err:
            print("refused:", "triton does not import" in str(err))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    reason, backend, refused = run.stdout.strip().splitlines()
    assert reason.startswith("triton does not import") and "pip install triton" in reason
    assert backend == "torch" and refused == "refused: True"
    assert sum("triton is not usable" in line for line in run.stderr.splitlines()) == 1, run.stderr


def test_fbgemm_is_imported_lazily_and_its_absence_is_one_log_line() -> None:
    code = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        import recframe.embedding as emb
        assert "fbgemm_gpu" not in sys.modules, "importing recframe.embedding imported fbgemm_gpu"
        sys.modules["fbgemm_gpu"] = None  # from here on, `import fbgemm_gpu` fails
        tables = [emb.TableConfig(name=n, num_embeddings=10, embedding_dim=8, feature_names=[n]) for n in "ab"]
        for _ in range(2):
            ebc = emb.EmbeddingBagCollection(tables, emb.SparseOptimizer(name="rowwise_adagrad"))
        print(sorted(set(ebc.backends.values())))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['torch']"
    lines = [line for line in run.stderr.splitlines() if "fbgemm_gpu is not usable" in line]
    assert len(lines) == 1, run.stderr


def test_backend_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    tables = [table("logged_once")]
    _logged.clear()
    with caplog.at_level(logging.INFO, logger="recframe.embedding"):
        for _ in range(3):
            EmbeddingBagCollection(tables, SparseOptimizer(name="sgd"), backend="torch")
    records = [r for r in caplog.records if r.name == "recframe.embedding"]
    assert len(records) == 1 and "torch[logged_once](sgd)" in records[0].getMessage()


@pytest.mark.parametrize("dtype,torch_dtype,tol", [("fp16", torch.float16, 1e-3), ("bf16", torch.bfloat16, 8e-3)])
def test_low_precision_storage_forward_and_update(dtype: str, torch_dtype: torch.dtype, tol: float) -> None:
    """Rows are stored in fp16/bf16, pooled in fp32, updated in fp32 and rounded back."""
    from recframe.sparse import KeyedJaggedTensor

    tables = [table("t", weight_dtype=dtype, feature_names=["f", "g"], pooling="mean")]
    opt = SparseOptimizer(name="rowwise_adagrad", lr=0.1)
    backends = ["torch"] + (["fbgemm"] if HAS_FBGEMM and dtype == "fp16" else [])
    kjt = KeyedJaggedTensor.from_lengths(["f", "g"], torch.tensor([1, 2, 2, 7, 3]), torch.tensor([3, 0, 1, 1]))
    for backend in backends:
        torch.manual_seed(0)
        low = EmbeddingBagCollection(tables, opt, backend=backend)
        full = EmbeddingBagCollection([table("t", feature_names=["f", "g"], pooling="mean")], opt, backend="torch")
        weight = low.state_dict()["t.weight"].clone()  # state_dict values are live views
        assert weight.dtype == torch_dtype
        full.load_state_dict({"t.weight": weight.float()})
        out_low, out_full = low(kjt), full(kjt)
        assert out_low.values().dtype == torch.float32
        torch.testing.assert_close(out_low.values(), out_full.values(), atol=1e-6, rtol=1e-6)
        out_low.values().sum().backward()
        out_full.values().sum().backward()
        updated = low.state_dict()["t.weight"]
        assert updated.dtype == torch_dtype and not torch.equal(updated, weight)
        torch.testing.assert_close(updated.float(), full.state_dict()["t.weight"], atol=tol, rtol=tol)


def test_auto_runs_tables_on_any_device_type_through_torch() -> None:
    from recframe.embedding.kernels.select import plan_groups

    tables = [table("t")]
    for device in ("xpu", "mps"):
        groups = plan_groups(tables, SparseOptimizer(name="adam"), torch.device(device), "auto")
        assert [g.backend for g in groups] == ["torch"], device
