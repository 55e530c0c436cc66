"""Dense activation elements per sample (``recframe.models.flops``, the step simulator's activation term): the
block helpers and every model's ``dense_activations_per_sample`` counted by hand."""

from __future__ import annotations

from recframe.embedding import TableConfig
from recframe.models import DLRM, DLRM_DCN, CrossNet, DeepFM, FMInteraction, Task, TwoTower, WideDeep
from recframe.models.flops import (
    cross_net_activations,
    dot_interaction_activations,
    fm_activations,
    low_rank_cross_net_activations,
    mlp_activations,
    wide_linear_activations,
)
from recframe.models.interactions import DotInteraction, LowRankCrossNet
from recframe.models.towers import MLP, WideLinear

from .helpers import ebc, wide_ebc


def _tables(dims: list[int], prefix: str = "f") -> list[TableConfig]:
    return [TableConfig(name=f"t_{prefix}{i}", num_embeddings=4, embedding_dim=d, feature_names=[f"{prefix}{i}"])
            for i, d in enumerate(dims)]


def test_block_activations_by_hand() -> None:
    assert mlp_activations(MLP(3, [8, 4, 2], activate_last=False)) == 14  # each layer's output
    # 3 sparse + 1 dense vectors of dim 5: combined 4 x 5, 6 pairs, output 5 + 6
    assert dot_interaction_activations(DotInteraction(3), 5) == 20 + 6 + 11
    assert dot_interaction_activations(DotInteraction(3, skip_dense=False), 5) == 20 + 6 + 6
    assert cross_net_activations(CrossNet(6, 2)) == 12
    assert low_rank_cross_net_activations(LowRankCrossNet(6, 2, 3)) == 2 * (3 + 6 + 6)
    assert fm_activations(FMInteraction(), 3, 2) == 6 + 2 + 2 + 1  # squares, field sum, output, reduced
    assert fm_activations(FMInteraction(reduce=False), 3, 2) == 10
    assert wide_linear_activations(WideLinear(2, 3, 4)) == 4


def test_mlperf_dlrm_dcnv2_activations() -> None:
    """MLPerf DLRM-DCNv2: bottom 512-256-128, the 3,456-wide concatenation, 3 low-rank (512) cross layers of
    width 3,456, top 1024-1024-512-256 and one logit: 29,441 elements a sample (241M a step at batch 8192)."""
    model = DLRM_DCN(ebc(_tables([128] * 26)), num_dense_features=13, dense_layer_sizes=[512, 256, 128],
                     over_layer_sizes=[1024, 1024, 512, 256], num_cross_layers=3, low_rank=512)
    bottom, concat, cross, top, head = 512 + 256 + 128, 27 * 128, 3 * (512 + 2 * 3456), 1024 + 1024 + 512 + 256, 1
    assert model.dense_activations_per_sample() == bottom + concat + cross + top + head == 29_441


def test_small_models_by_hand() -> None:
    dlrm = DLRM(ebc(_tables([4, 4, 4])), num_dense_features=3, dense_layer_sizes=[8, 4], over_layer_sizes=[6])
    # bottom 8 + 4; interaction: 4 x 4 combined, 6 pairs, output 4 + 6; top 6; head 1
    assert dlrm.dense_activations_per_sample() == 12 + 16 + 6 + 10 + 6 + 1 == 51
    no_dense = DLRM(ebc(_tables([4, 4, 4])), num_dense_features=0, dense_layer_sizes=[], over_layer_sizes=[6])
    # 3 x 4 combined, 3 pairs, output 3 (no skip); the top MLP's input: 3 x 4 embeddings + 3 pairs; top 6; head 1
    assert no_dense.dense_activations_per_sample() == 12 + 3 + 3 + 15 + 6 + 1
    dcn = DLRM_DCN(ebc(_tables([4, 4])), num_dense_features=2, dense_layer_sizes=[4], over_layer_sizes=[5],
                   num_cross_layers=2, low_rank=3)
    assert dcn.dense_activations_per_sample() == 4 + 12 + 2 * (3 + 24) + 5 + 1
    tables = _tables([4, 4, 4])
    deepfm = DeepFM(ebc(tables), wide_ebc(tables, 2), num_dense_features=2, deep_layer_sizes=[5],
                    tasks=[Task("click"), Task("purchase")])
    # dense fields 2 x 4, the 5 fields 20, FM 5 x 4 + 2 x 4 + 1, deep 5, head 2, wide 2, combining 3 x 2
    assert deepfm.dense_activations_per_sample() == 8 + 20 + 29 + 5 + 2 + 2 + 6
    wide_deep = WideDeep(ebc(_tables([4, 6])), wide_ebc(_tables([4, 6]), 1), num_dense_features=2,
                         deep_layer_sizes=[5])
    assert wide_deep.dense_activations_per_sample() == 12 + 5 + 1 + 1 + 1  # concat, deep, head, wide, sum
    two_tower = TwoTower(ebc(_tables([4, 4], "u")), ebc(_tables([4, 4], "i")), [6, 3], [5, 3])
    # inputs 8 + 8, towers 9 + 8, two normalized vectors of 3, a score and its scaling per in-batch item
    assert two_tower.dense_activations_per_sample() == 16 + 17 + 6 + 2
    assert two_tower.dense_activations_per_sample(batch_size=4) == 16 + 17 + 6 + 8
