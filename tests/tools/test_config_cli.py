"""bot4 config defaults is valid TOML of exactly the Config defaults with a doc line (and unit, range) above every
key, from the dataclasses' own field metadata; bot4 config check passes a good file and names what is wrong in a
bad one."""
import dataclasses
import subprocess
import sys
import tomllib
from typing import get_type_hints

import pytest

from pipeline.config import Config, from_dict, load, unit_of
from tests.conftest import ROOT


def bot4(*args):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def defaults():
    done = bot4("config", "defaults")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_defaults_parse_as_toml_and_are_the_config_defaults(defaults, tmp_path):
    assert from_dict(tomllib.loads(defaults)) == Config()
    path = tmp_path / "defaults.toml"
    path.write_text(defaults)
    assert load(path) == Config()  # round trip through a file, as bot4 run --config reads it


def test_every_key_has_its_doc_unit_and_range_above_it(defaults):
    lines = defaults.splitlines()
    sections = get_type_hints(Config)
    section, seen = None, set()
    for n, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key = line.split(" = ")[0]
            seen.add((section, key))
            comment = lines[n - 1]
            assert comment.startswith("# ") and len(comment) > 10, (section, key, comment)
    expected = {(s.name, k.name) for s in dataclasses.fields(Config) for k in dataclasses.fields(sections[s.name])}
    assert seen == expected
    for s in dataclasses.fields(Config):
        kinds = get_type_hints(sections[s.name])
        for key in dataclasses.fields(sections[s.name]):
            assert key.metadata.get("doc"), f"{s.name}.{key.name} has no doc"
            if kinds[key.name] is float:  # a measurement: its unit is declared or in its name
                assert unit_of(key), f"{s.name}.{key.name} has no unit"
    block = defaults[:defaults.index("\nduration_s = ")]
    assert block.endswith("# how long to run; 0 = until Ctrl-C / SIGTERM. Unit: s. Range: [0, 31,622,400]")


def test_check_passes_a_good_file_in_one_line(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text('[run]\nduration_s = 30\n[strategy]\nkind = "signal"\n')
    done = bot4("config", "check", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith(f"{path}: ok, 2 keys differ"), done.stdout
    assert "run.duration_s" in done.stdout and "strategy.kind=signal" in done.stdout


@pytest.mark.parametrize("text, says", [
    ("[venue]\nhold_ms = 1e9\n", "venue.hold_ms=1000000000.0 is invalid: use a finite number in [0, 60,000]"),
    ("[run]\ndurration_s = 3\n", "unknown key 'run.durration_s'; did you mean 'run.duration_s'?"),
    ("[rings]\ncapacity = 1000\n", "rings.capacity=1000 is invalid: use a power of two >= 16"),
    ("[run\n", "is not valid TOML"),
])
def test_check_of_a_bad_file_is_exit_2_naming_the_key_and_the_fix(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = bot4("config", "check", str(path))
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert says in done.stderr, done.stderr
