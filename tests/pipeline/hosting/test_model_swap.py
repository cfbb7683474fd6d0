"""The inference host's swapper against a real request table: loads in steps, swaps, refuses, rolls back."""
from pathlib import Path

from pipeline.hosting import model_swap, models
from shm.segment import NAME_PREFIX
from tests.onnx_members import registry_with_members, write_ensemble


def _make(path):
    made = models.Models((yield from models.load_steps(path)), 16)
    yield from made.warm_steps()
    return made


def _answer(table):
    rec, _ = table.read(model_swap.RESULT)
    return int(rec["seq"]), bool(rec["ok"]), int(rec["version"]), model_swap.text_of(rec)


def _publish(table, action, path=""):
    return table.publish(model_swap.REQUEST, model_swap.message(action, str(path)))


def test_the_swapper_should_load_in_steps_swap_refuse_and_roll_back(shm_prefix, tmp_path):
    paths = registry_with_members(tmp_path, 3)
    v1 = write_ensemble(tmp_path, 1, [{"path": paths[0], "weight": 1.0}, {"path": paths[1], "weight": 1.0}])
    v2 = write_ensemble(tmp_path, 2, [{"path": paths[0], "weight": 1.0}, {"path": paths[2], "weight": 1.0}])
    table = model_swap.table(shm_prefix[len(NAME_PREFIX):], create=True)
    try:
        early = _publish(table, model_swap.PUBLISH, v2)  # made before the host starts: taken when it does
        swapper = model_swap.Swapper(table, _make, models.run_steps(_make(Path(v1))))
        assert swapper.current.loaded.version == 1
        steps = 0
        while not swapper.poll():
            steps += 1
            assert steps < 50
            if steps == 1:
                again = _publish(table, model_swap.PUBLISH, v1)  # during the load: seen once it is answered
        assert steps >= 4  # the request, then member reads, sessions and warm runs: one step per poll
        assert swapper.current.loaded.version == 2 and swapper.previous.loaded.version == 1
        assert _answer(table)[:3] == (early, True, 2) and swapper.swaps == 1
        while not swapper.poll():
            pass
        assert _answer(table)[:3] == (again, True, 1) and swapper.swaps == 2 and swapper.current.loaded.version == 1

        gone = _publish(table, model_swap.PUBLISH, tmp_path / "gone")
        swapper.poll()
        swapper.poll()
        seq, ok, version, text = _answer(table)
        assert (seq, ok, version) == (gone, False, 1) and "no such file" in text and swapper.refused == 1

        back = _publish(table, model_swap.ROLLBACK)
        assert swapper.poll() and swapper.current.loaded.version == 2
        assert _answer(table)[:3] == (back, True, 2)
        assert swapper.longest_step_ns > 0
    finally:
        table.close()
        table.segment.unlink()


def test_rolling_back_with_nothing_before_should_be_refused(shm_prefix, tmp_path):
    table = model_swap.table(shm_prefix[len(NAME_PREFIX):], create=True)
    try:
        swapper = model_swap.Swapper(table, _make, models.run_steps(_make(Path(models.inference.DEFAULT_MODEL))))
        seq = _publish(table, model_swap.ROLLBACK)
        assert not swapper.poll()
        assert _answer(table) == (seq, False, 1, "nothing to roll back to: no swap since the run started")
    finally:
        table.close()
        table.segment.unlink()


def test_a_restarted_host_should_resume_the_published_set_and_still_roll_back(shm_prefix, tmp_path, capsys):
    paths = registry_with_members(tmp_path, 3)
    v1 = write_ensemble(tmp_path, 1, [{"path": paths[0], "weight": 1.0}, {"path": paths[1], "weight": 1.0}])
    v2 = write_ensemble(tmp_path, 2, [{"path": paths[0], "weight": 1.0}, {"path": paths[2], "weight": 1.0}])
    table = model_swap.table(shm_prefix[len(NAME_PREFIX):], create=True)
    try:
        first, resumed = model_swap.first_models(table, _make, Path(v1))
        assert first.loaded.version == 1 and not resumed  # a fresh run: the configured set
        swapper = model_swap.Swapper(table, _make, first, resumed)
        _publish(table, model_swap.PUBLISH, v2)
        while not swapper.poll():
            pass
        assert model_swap.in_use(table) == str(Path(v2).resolve())
        del swapper  # the process dies; the table is the run's and stays

        again, resumed = model_swap.first_models(table, _make, Path(v1))
        assert again.loaded.version == 2 and resumed and "resumed the model set in use" in capsys.readouterr().err
        swapper = model_swap.Swapper(table, _make, again, resumed)
        back = _publish(table, model_swap.ROLLBACK)  # its v1 died with the process: loaded again, in steps
        steps = 0
        while not swapper.poll():
            steps += 1
            assert steps < 50
        assert steps >= 2 and swapper.current.loaded.version == 1 and _answer(table)[:3] == (back, True, 1)
        assert model_swap.in_use(table) == str(Path(v1).resolve())

        again, resumed = model_swap.first_models(table, _make, Path(v1))  # in use is the configured set: it
        assert again.loaded.version == 1 and resumed  # resumes, and the set before it is still the rollback's
        swapper = model_swap.Swapper(table, _make, again, resumed)
        back = _publish(table, model_swap.ROLLBACK)
        while not swapper.poll():
            pass
        assert swapper.current.loaded.version == 2 and _answer(table)[:3] == (back, True, 2)

        Path(v2, "ensemble.json").unlink()  # the set in use is gone by the next restart: the configured one serves
        fallback, resumed = model_swap.first_models(table, _make, Path(v1))
        assert fallback.loaded.version == 1 and not resumed and "cannot be loaded" in capsys.readouterr().err
    finally:
        table.close()
        table.segment.unlink()
