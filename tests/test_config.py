"""Config: every key defaulted, unknown keys and bad values refused with key and file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ml.config import load_config, parse_config
from edge_ml.errors import ConfigError


def test_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    config = load_config(path)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.topics) == (
        "127.0.0.1", 1883, ["sensors/#"])
    assert config.alerts.topic_prefix == "edge-ml"
    assert config.storage.db.endswith("edge-ml.db")
    assert config.source == str(path)


def test_state_directory_sets_the_default_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-ml:/other")
    assert parse_config({}).storage.db == "/var/lib/edge-ml/edge-ml.db"


def test_environment_variable_names_the_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[model]\nheight = 5\n")
    monkeypatch.setenv("EDGE_ML_CONFIG", str(path))
    assert load_config(None).model.height == 5


@pytest.mark.parametrize(
    "text,key",
    [
        ("[mqtt]\nprot = 1\n", "mqtt.prot"),
        ("[nonsense]\n", "nonsense"),
        ("[mqtt]\nport = 'abc'\n", "mqtt.port"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ("[mqtt]\nqos = 3\n", "mqtt.qos"),
        ("[mqtt]\ntopics = 'sensors/#'\n", "mqtt.topics"),
        ("[mqtt]\ntopics = []\n", "mqtt.topics"),
        ("[mqtt.tls]\ncert = 'c.pem'\n", "mqtt.tls.cert"),
        ("[mqtt]\ntls = 3\n", "mqtt.tls"),
        ("[model]\nn_trees = 0\n", "model.n_trees"),
        ("[model]\nbackend = 'torch'\n", "model.backend"),
        ("[model]\npaper_score = 1\n", "model.paper_score"),
        ("[model]\nheavy_tail_floor = 1.5\n", "model.heavy_tail_floor"),
        ("[model]\nheavy_tail_floor = -0.1\n", "model.heavy_tail_floor"),
        ("[alerts]\nthreshold = 1.5\n", "alerts.threshold"),
        ("[alerts]\nresolve_threshold = 0.999\n", "alerts.resolve_threshold"),
        ("[alerts]\ntopic_prefix = 'a/#'\n", "alerts.topic_prefix"),
        # paho raises these at connect, on its network thread: ingestion would stop silently.
        ("[mqtt]\ntopics = ['s11/#', 'a/#/b']\n", "mqtt.topics[1]"),
        ("[mqtt]\ntopics = ['a/b#']\n", "mqtt.topics[0]"),
        ("[mqtt]\ntopics = ['sensors/+x/t']\n", "mqtt.topics[0]"),
        ("[mqtt]\ntopics = ['ok/#', '']\n", "mqtt.topics[1]"),
        ('[mqtt]\ntopics = ["a\\u0000b"]\n', "mqtt.topics[0]"),
        (f"[mqtt]\ntopics = ['{'x' * 65536}']\n", "mqtt.topics[0]"),
        ("[alerts]\nhomeassistant = true\nhomeassistant_prefix = 'ha/#'\n",
         "alerts.homeassistant_prefix"),
        ("[alerts]\nhomeassistant_prefix = 'ha/+/x'\n", "alerts.homeassistant_prefix"),
        ("[alerts]\nhomeassistant_prefix = ''\n", "alerts.homeassistant_prefix"),
        # and these when paho's client is built (a traceback from `run`)
        ("[mqtt]\nclient_id = ''\n", "mqtt.client_id"),
        ("[mqtt]\nhost = ''\n", "mqtt.host"),
        ("[mqtt]\nhost = 'broker .lan'\n", "mqtt.host"),
        ("[mqtt]\npassword_file = '/etc/edge-ml/mqtt-password'\n", "mqtt.password_file"),
        ("[storage]\ncheckpoint_interval_s = nan\n", "storage.checkpoint_interval_s"),
        ("[features]\nseason_bins = true\n", "features.season_bins"),
    ],
)
def test_bad_values_name_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert str(path) in str(info.value) and key in str(info.value)


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("topic", ["sensors/#", "#", "+", "sensors/+/temp", "+/+/#", "/", "a//b",
                                   "$SYS/broker/#", "sensors/température"])
def test_valid_topic_filters_pass(topic: str) -> None:
    assert parse_config({"mqtt": {"topics": [topic]}}).mqtt.topics == [topic]


def test_a_trailing_slash_on_a_prefix_is_one_spelling_of_it() -> None:
    # "edge-ml/" once gave a last will on "edge-ml//status" while Home Assistant watched
    # "edge-ml/status": every topic is built from the stripped prefix.
    config = parse_config({"alerts": {"topic_prefix": "edge-ml/", "homeassistant": True,
                                      "homeassistant_prefix": "homeassistant/"}})
    assert config.alerts.topic_prefix == "edge-ml"
    assert config.alerts.homeassistant_prefix == "homeassistant"
    with pytest.raises(ConfigError, match=r"alerts\.topic_prefix"):
        parse_config({"alerts": {"topic_prefix": "/"}})


def test_gateway_id_defaults_to_the_host_name_and_names_the_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "pi-greenhouse")
    config = parse_config({})
    assert config.daemon.gateway_id == "pi-greenhouse"
    # One client id per gateway (two gateways on one broker must not take over each other's
    # session), stable across restarts so the persistent session is found again.
    assert config.mqtt.client_id == "edge-ml-pi-greenhouse"
    assert parse_config({"mqtt": {"client_id": "edge-ml"}}).mqtt.client_id == "edge-ml"
    named = parse_config({"daemon": {"gateway_id": "gw-a"}})
    assert (named.daemon.gateway_id, named.mqtt.client_id) == ("gw-a", "edge-ml-gw-a")


@pytest.mark.parametrize("host", ["", "...", "pi/kitchen", "Ünï code+#"])
def test_an_odd_host_name_still_gives_a_valid_gateway_id(
        monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: host)
    gateway_id = parse_config({}).daemon.gateway_id
    assert gateway_id and not set(gateway_id) & set("/+# ")


@pytest.mark.parametrize("bad", ["", "gw/1", "gw+", "gw#", "-gw", "gw 1", "x" * 65, "gw\u00e9"])
def test_a_gateway_id_that_is_not_mqtt_safe_names_key_and_file(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[daemon]\ngateway_id = {bad!r}\n".replace("'", '"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "daemon.gateway_id"
    assert str(path) in str(info.value)
