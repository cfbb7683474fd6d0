"""A venue's credentials from the environment or from a file only its owner can read, and never shown: not by
repr/str, not in an error, not through pickling."""
import copy
import os
import pickle

import pytest

from pipeline.venues.credentials import Credentials, CredentialsError, env_prefix, from_file, load

KEY, SECRET = "AKx7Qe9ZlongapikeyVALUE0123", "S3cr3tVALUEthatmustnotleak987"


def assert_hidden(text: str) -> None:
    assert SECRET not in text and KEY not in text and KEY[:8] not in text


def test_the_environment_gives_key_and_secret_and_nothing_shows_them():
    creds = load("binance", env={"BOT4_BINANCE_API_KEY": KEY, "BOT4_BINANCE_API_SECRET": SECRET})
    assert creds.api_key == KEY and creds.ccxt_config() == {"apiKey": KEY, "secret": SECRET}
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds]), repr({"c": creds})):
        assert_hidden(shown)
        assert "AKx7…" in shown and "BOT4_BINANCE_API_KEY" in shown
    assert creds.mask(f"GET /x?k={KEY} headers {{'X-MBX-APIKEY': '{KEY}'}} s={SECRET}") == (
        "GET /x?k=*** headers {'X-MBX-APIKEY': '***'} s=***")
    with pytest.raises(TypeError, match="not serialised"):
        pickle.dumps(creds)
    assert copy.deepcopy(creds) is creds


def test_a_venue_name_becomes_its_variables_prefix_and_a_passphrase_is_optional():
    assert env_prefix("binance-usdm") == "BOT4_BINANCE_USDM_"
    creds = load("okx.eu", env={"BOT4_OKX_EU_API_KEY": KEY, "BOT4_OKX_EU_API_SECRET": SECRET,
                                "BOT4_OKX_EU_API_PASSWORD": "pass-phrase-42"})
    assert creds.ccxt_config()["password"] == "pass-phrase-42"
    assert "pass-phrase-42" not in repr(creds) and creds.mask("p=pass-phrase-42") == "p=***"


@pytest.mark.parametrize("env, names", [
    ({"BOT4_BINANCE_API_KEY": KEY}, ["BOT4_BINANCE_API_SECRET"]),
    ({"BOT4_BINANCE_API_SECRET": SECRET}, ["BOT4_BINANCE_API_KEY"]),
    ({}, ["BOT4_BINANCE_API_KEY", "BOT4_BINANCE_API_SECRET", "BOT4_BINANCE_CREDENTIALS"]),
    ({"BOT4_BINANCE_API_KEY": KEY, "BOT4_BINANCE_API_SECRET": ""}, ["API secret is empty"]),
    ({"BOT4_BINANCE_API_KEY": KEY, "BOT4_BINANCE_API_SECRET": SECRET + " \n"}, ["API secret holds whitespace"]),
])
def test_missing_or_malformed_variables_are_named_and_their_values_never_shown(env, names):
    with pytest.raises(CredentialsError) as info:
        load("binance", env=env)
    message = str(info.value)
    for name in names:
        assert name in message
    assert_hidden(message)


def write(path, text, mode):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_a_file_readable_by_others_is_refused_with_the_fix_and_an_owner_only_file_is_read(tmp_path):
    text = f'api_key = "{KEY}"\napi_secret = "{SECRET}"\n'
    for mode in (0o644, 0o640, 0o604, 0o660, 0o602):
        path = write(tmp_path / f"creds-{mode:o}.toml", text, mode)
        with pytest.raises(CredentialsError, match=f"chmod 600 {path}") as info:
            from_file("binance", path)
        assert_hidden(str(info.value))
        assert f"mode 0{mode:o}" in str(info.value)
    path = write(tmp_path / "creds.toml", text, 0o600)
    creds = from_file("binance", path)
    assert creds.ccxt_config() == {"apiKey": KEY, "secret": SECRET} and str(path) in repr(creds)
    # the environment names the file; an explicit path wins over the environment
    assert load("binance", env={"BOT4_BINANCE_CREDENTIALS": str(path)}) == creds
    assert load("binance", path=path, env={"BOT4_BINANCE_API_KEY": "x", "BOT4_BINANCE_API_SECRET": "y"}) == creds
    assert load("binance", path=write(tmp_path / "ro.toml", text, 0o400)) == creds


def test_one_file_may_hold_several_venues_in_tables(tmp_path):
    path = write(tmp_path / "all.toml", f'[binance]\napi_key = "{KEY}"\napi_secret = "{SECRET}"\n'
                                        f'[kraken]\napi_key = "k2-key"\napi_secret = "k2-secret"\n', 0o600)
    assert from_file("binance", path).api_key == KEY
    assert from_file("kraken", path).ccxt_config() == {"apiKey": "k2-key", "secret": "k2-secret"}


@pytest.mark.parametrize("text, match", [
    (f'api_key = "{KEY}"\n', "has no api_secret"),
    (f'api_key = "{KEY}"\napi_secret = {SECRET}\n', "not valid TOML"),      # an unquoted secret
    (f'api_key = "{KEY}"\napi_secret = "{SECRET}\n', "not valid TOML"),     # an unclosed string
    (f'api_key = "{KEY}"\napi_secret = "{SECRET}"\napi_password = 7\n', "api_password must be a string"),
])
def test_a_malformed_file_is_refused_without_echoing_its_content(tmp_path, text, match):
    path = write(tmp_path / "bad.toml", text, 0o600)
    with pytest.raises(CredentialsError, match=match) as info:
        from_file("binance", path)
    assert_hidden(str(info.value))
    # no chained exception carries the decoder's view of the text
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_a_missing_file_or_a_directory_is_refused(tmp_path):
    with pytest.raises(CredentialsError, match="does not exist"):
        from_file("binance", tmp_path / "nope.toml")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(CredentialsError, match="not a regular file"):
        from_file("binance", d)


def test_direct_construction_checks_values_and_equality_compares_them():
    with pytest.raises(CredentialsError, match="API key is empty"):
        Credentials("binance", "", SECRET)
    a, b = Credentials("binance", KEY, SECRET), Credentials("binance", KEY, SECRET + "x")
    assert a == Credentials("binance", KEY, SECRET) and a != b
    with pytest.raises(TypeError):
        hash(a)
    short = Credentials("binance", "abc", SECRET)
    assert "abc" not in repr(short)  # a key too short to show a part of is not shown at all
