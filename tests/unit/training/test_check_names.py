"""The config check (issue 17, item 3): every name a builder looks up, a key added with + outside the free-form
mappings, a feature spec that is not YAML (file and line, reported once), a CSV header that is not text: each is
a problem of the check, before anything is built, never a traceback."""

from __future__ import annotations

from pathlib import Path

from recframe.training.checks import find_problems


def problems(*args: str) -> dict[str, str]:
    return {p.key: f"{p.message} | {p.hint}" for p in find_problems(list(args))}


def test_every_name_the_builders_look_up_is_checked() -> None:
    assert "unknown model 'os.system'" in problems("+experiment=dlrm", "model.name=os.system")["model.name"]
    found = problems("+experiment=dlrm", "data.kind=criteo_tvs")
    assert list(found) == ["data.kind"] and "unknown data source 'criteo_tvs' | did you mean 'criteo_tsv'?" in \
        found["data.kind"]
    assert "unknown dense optimizer 'adamm' | did you mean 'adam'?" in \
        problems("+experiment=dlrm", "optim.dense.name=adamm")["optim.dense.name"]
    assert "Invalid value 'cosin'" in problems("+experiment=dlrm", "optim.schedule.decay=cosin")[
        "optim.schedule.decay"]


def test_a_key_added_with_plus_must_be_in_a_schema() -> None:
    found = problems("+experiment=dlrm", "+trainer.max_step=5", "++model.bottom_mpl=[4]", "+verbose=3")
    assert found["+trainer.max_step"] == ("no such key: + adds keys only inside free-form mappings | did you mean "
                                          "'trainer.max_steps'?")
    assert found["++model.bottom_mpl"].endswith("did you mean 'model.bottom_mlp'?")
    assert "+ adds keys only in tables.specs, sharding.constraints, sharding.tables and data.columns" in \
        found["+verbose"]
    assert problems("+experiment=dlrm", "+hydra.job.env_set.X=1") == {}  # hydra's own and group selections pass


def test_a_free_form_mapping_takes_new_keys(tmp_path: Path) -> None:
    path, spec = tmp_path / "t.csv", tmp_path / "spec.yaml"
    path.write_text("click,price,user\n1,2,a\n")
    spec.write_text("label: click\ndense: {price: {}}\ncategorical: {user: {rows: 10}}\n")
    found = problems("+experiment=tabular", f"data.path={path}", f"data.spec={spec}", "+data.columns.extra=price")
    assert not [key for key in found if key.startswith("+")], found


def test_a_spec_that_is_not_yaml_is_one_problem_with_its_line(tmp_path: Path) -> None:
    spec, table = tmp_path / "spec.yaml", tmp_path / "t.csv"
    spec.write_text("label: click\ndense: {price: {transform: log1p}\ncategorical:\n  user: {rows: 10}\n")
    table.write_text("click,price,user\n1,2,a\n")
    found = find_problems(["+experiment=tabular", f"data.path={table}", f"data.spec={spec}"])
    assert len(found) == 1, found
    assert f"feature spec {spec}:3:1: expected ',' or '}}'" in found[0].message
    assert "(while parsing a flow mapping from line 2)" in found[0].message


def test_a_csv_whose_header_is_not_text_is_a_problem(tmp_path: Path) -> None:
    path, spec = tmp_path / "t.csv", tmp_path / "spec.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff" * 50)  # an image, not a table
    spec.write_text("label: click\ndense: {price: {}}\ncategorical: {user: {rows: 10}}\n")
    found = problems("+experiment=tabular", f"data.path={path}", f"data.spec={spec}")
    assert "the header (line 1) is not UTF-8" in found["data.path"]
