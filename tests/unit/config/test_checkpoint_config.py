"""Checkpoint settings are checked with the config: every problem at once, with its key."""

from recframe.training.checks import find_problems


def test_bad_checkpoint_settings_are_config_problems() -> None:
    problems = find_problems(["+experiment=dlrm", "checkpoint.keep_last=0", "checkpoint.every_n_steps=-1"])
    keys = {p.key for p in problems}
    assert keys == {"checkpoint.keep_last", "checkpoint.every_n_steps"}, problems


def test_resuming_several_processes_is_allowed() -> None:
    assert find_problems(["+experiment=dlrm", "trainer.devices=2", "ckpt_path=last"]) == []
