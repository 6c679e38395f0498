"""Settings are read once, from CIDADE_* variables, then flags; bad values are refused clearly."""

from __future__ import annotations

import pytest

from cidade.config import Settings, load_settings, settings_to_env


def test_environment_then_overrides():
    s = load_settings({"CIDADE_PORT": "9000", "CIDADE_HISTORY": "false"}, host="0.0.0.0")
    assert s.port == 9000 and s.history is False and s.host == "0.0.0.0"
    assert load_settings({}) == Settings()


def test_round_trip_through_environment():
    s = Settings(port=8123, history=False, store="sqlite:////tmp/x.db")
    assert load_settings(settings_to_env(s)) == s


@pytest.mark.parametrize("var,value", [("CIDADE_PORT", "eighty"), ("CIDADE_HISTORY", "maybe")])
def test_bad_values_are_refused(var, value):
    with pytest.raises(SystemExit, match=var):
        load_settings({var: value})


@pytest.mark.parametrize(
    "var,value",
    [
        ("CIDADE_TEMPORAL_MAX_INSTANCES", "0"),
        ("CIDADE_HISTORY_PURGE_INTERVAL", "0"),
        ("CIDADE_HISTORY_RETENTION", "TrafficFlowObserved"),
        ("CIDADE_HISTORY_RETENTION", "TrafficFlowObserved=90 days"),
        ("CIDADE_HISTORY_RETENTION", "TrafficFlowObserved=P0D"),
        ("CIDADE_HISTORY_RETENTION", "*=P1Y,*=P2Y"),
        ("CIDADE_HISTORY_RETENTION", "Traffic Flow=P1Y"),
    ],
)
def test_senseless_values_are_refused(var, value):
    with pytest.raises(SystemExit, match=var):
        load_settings({var: value})


def test_history_retention_setting():
    value = "TrafficFlowObserved=P90D, https://example.org/T=P1M,*=P5Y"
    s = load_settings({"CIDADE_HISTORY_RETENTION": value, "CIDADE_TEMPORAL_MAX_INSTANCES": "50"})
    assert s.history_retention == value and s.temporal_max_instances == 50
    assert load_settings(settings_to_env(s)) == s


def test_access_control_off_only_on_loopback():
    assert load_settings({"CIDADE_AUTH": "false"}).auth is False
    with pytest.raises(SystemExit, match="local development"):
        load_settings({"CIDADE_AUTH": "false", "CIDADE_HOST": "0.0.0.0"})
    assert load_settings({"CIDADE_HOST": "0.0.0.0"}).auth is True


def test_one_mqtt_session_means_one_worker():
    assert load_settings({"CIDADE_MQTT": "mqtt://127.0.0.1", "CIDADE_WORKERS": "1"}).workers == 1
    assert load_settings({"CIDADE_WORKERS": "4"}).workers == 4
    with pytest.raises(SystemExit, match="CIDADE_WORKERS=1"):
        load_settings({"CIDADE_MQTT": "mqtt://127.0.0.1", "CIDADE_WORKERS": "2"})


def test_bad_access_settings_stop_at_start():
    with pytest.raises(SystemExit, match="CIDADE_RATE_LIMIT"):
        load_settings({"CIDADE_RATE_LIMIT": "-1"})
    with pytest.raises(SystemExit, match=r"CIDADE_OIDC.*none"):
        load_settings(
            {
                "CIDADE_OIDC_ISSUER": "https://sso.example",
                "CIDADE_OIDC_AUDIENCE": "cidade",
                "CIDADE_OIDC_ALGORITHMS": "none",
            }
        )
    with pytest.raises(SystemExit, match=r"CIDADE_OIDC.*HS256"):
        load_settings(
            {
                "CIDADE_OIDC_ISSUER": "https://sso.example",
                "CIDADE_OIDC_AUDIENCE": "cidade",
                "CIDADE_OIDC_ALGORITHMS": "HS256",
            }
        )
