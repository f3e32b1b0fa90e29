"""broker_auth's files on disk, its refusals, the reload signal, and the shape of the production config.

No broker here; test_broker_auth.py shows a real Mosquitto accepting what these files contain.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.adapters import broker_auth
from gateway.adapters.broker_auth import BrokerAccount, BrokerFiles, InvalidBrokerAccount
from gateway.domain.credentials import broker_secret_matches, hash_broker_secret

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
GOOD_HASH = hash_broker_secret("secret-0123456789abcdef")
GATEWAY = BrokerAccount("camgate-gateway", broker_auth.hash_gateway_password("gw-password"))


@pytest.fixture
def files(tmp_path: Path) -> BrokerFiles:
    return BrokerFiles(password_file=tmp_path / "passwd", acl_file=tmp_path / "acl")


def test_the_files_hold_every_account_and_the_camera_patterns(files: BrokerFiles) -> None:
    written = broker_auth.write_broker_files(files, [("CGA1B2C3D4E5", GOOD_HASH)], [GATEWAY])

    assert written == 1
    accounts = [line for line in files.password_file.read_text().splitlines() if not line.startswith("#")]
    assert accounts == [f"camgate-gateway:{GATEWAY.password_hash}", f"CGA1B2C3D4E5:{GOOD_HASH}"]
    assert broker_secret_matches("gw-password", GATEWAY.password_hash)
    acl = files.acl_file.read_text()
    assert "user camgate-gateway\ntopic read cam/+/alert\n" in acl
    assert "pattern write cam/%u/alert\n" in acl
    assert "pattern read cam/%u/cmd/#\n" in acl
    for path in (files.password_file, files.acl_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in files.password_file.parent.iterdir()) == ["acl", "passwd"]


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group to one we are not in needs root")
def test_the_files_get_the_brokers_group(tmp_path: Path) -> None:
    files = BrokerFiles(tmp_path / "passwd", tmp_path / "acl", group="mosquitto")
    broker_auth.write_broker_files(files, [], [GATEWAY])
    assert files.password_file.stat().st_gid == files.acl_file.stat().st_gid != 0


@pytest.mark.parametrize(
    "username",
    ["", "CGA1\nevil:$7$", "cam/CGA1", "CG+", "CG#", "CG:A", "CG A", "CGÄ1", "x" * 65],
)
def test_a_username_that_would_break_the_files_or_the_patterns_is_refused(
    files: BrokerFiles, username: str
) -> None:
    with pytest.raises(InvalidBrokerAccount):
        broker_auth.write_broker_files(files, [(username, GOOD_HASH)], [GATEWAY])


@pytest.mark.parametrize(
    "password_hash",
    [
        "plain-secret",
        "$6$c2FsdA==$ZGlnZXN0",  # Mosquitto's older SHA-512 format: not what credentials.py writes
        GOOD_HASH + "\nCGEVIL0001:" + GOOD_HASH,
        GOOD_HASH.replace("$7$1000$", "$7$0$"),
        # Salts mosquitto 2.0.11 rejects with "Unable to decode password salt ... removing entry".
        "$7$1000$" + "QUFBQUFBQUFBQUFBQUFBQQ==" + "$" + GOOD_HASH.rsplit("$", 1)[1],
        "$7$1000$" + "QUFBQUFBQUE=" + "$" + GOOD_HASH.rsplit("$", 1)[1],
        GOOD_HASH[:-8] + "-_-_-_==",  # url-safe base64
    ],
)
def test_a_hash_mosquitto_would_drop_is_refused(files: BrokerFiles, password_hash: str) -> None:
    with pytest.raises(InvalidBrokerAccount):
        broker_auth.write_broker_files(files, [("CGA1B2C3D4E5", password_hash)], [GATEWAY])


def test_a_camera_named_like_a_gateway_is_refused(files: BrokerFiles) -> None:
    with pytest.raises(InvalidBrokerAccount, match="twice"):
        broker_auth.write_broker_files(files, [("camgate-gateway", GOOD_HASH)], [GATEWAY])


def test_a_refused_account_leaves_both_files_as_they_were(files: BrokerFiles) -> None:
    broker_auth.write_broker_files(files, [("CGA1B2C3D4E5", GOOD_HASH)], [GATEWAY])
    before = (files.password_file.read_bytes(), files.acl_file.read_bytes())
    gateway_2 = BrokerAccount("camgate-gateway-2", GOOD_HASH)

    with pytest.raises(InvalidBrokerAccount):
        broker_auth.write_broker_files(files, [("CGB1B2C3D4E5", "broken")], [GATEWAY, gateway_2])

    assert (files.password_file.read_bytes(), files.acl_file.read_bytes()) == before
    assert sorted(p.name for p in files.password_file.parent.iterdir()) == ["acl", "passwd"]


def test_reload_refuses_pids_that_would_signal_a_group_or_init(tmp_path: Path) -> None:
    for pid in (0, 1, -1):
        with pytest.raises(broker_auth.BrokerReloadFailed):
            broker_auth.reload_broker(pid=pid)
    garbled = tmp_path / "mosquitto.pid"
    garbled.write_text("-1\n")
    with pytest.raises(broker_auth.BrokerReloadFailed):
        broker_auth.reload_broker(pid_file=garbled)
    with pytest.raises(broker_auth.BrokerReloadFailed):
        broker_auth.reload_broker(pid_file=tmp_path / "missing.pid")
    with pytest.raises(TypeError):
        broker_auth.reload_broker()


def test_reload_of_a_stale_pid_says_so(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / "mosquitto.pid"
    stale.write_text(f"{gone.pid}\n")
    with pytest.raises(broker_auth.BrokerReloadFailed, match="stale"):
        broker_auth.reload_broker(pid_file=stale)


def _listener_blocks(config: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    for line in config.splitlines():
        if line.startswith("listener "):
            blocks.append([])
        if blocks and line and not line.startswith("#"):
            blocks[-1].append(line)
    return blocks


def test_every_production_listener_ties_client_ids_to_usernames() -> None:
    config = (DEPLOY / "mosquitto.conf").read_text()
    blocks = _listener_blocks(config)
    assert blocks
    for block in blocks:
        assert "use_username_as_clientid true" in block, block[0]
    # The policy comes before the listeners: a listener option in it would open port 1883 (and the
    # fixture, which uses the same order, would catch it) rather than land on the last listener.
    assert config.index("include_dir /etc/mosquitto/conf.d") < config.index("\nlistener ")


def test_the_policy_opens_no_listener() -> None:
    for policy in (DEPLOY / "conf.d").glob("*.conf"):
        keys = {line.split()[0] for line in policy.read_text().splitlines() if line and line[0] != "#"}
        assert not keys & {"listener", "port", "bind_address"}, policy.name


def test_the_policy_plugin_tells_gateways_from_cameras_by_name(files: BrokerFiles) -> None:
    # deploy/mosquitto/plugin/camgate_policy.c lets only camgate-<suffix> join $share groups and retain.
    with pytest.raises(InvalidBrokerAccount, match="must not be named"):
        broker_auth.write_broker_files(files, [("camgate-cam1", GOOD_HASH)], [GATEWAY])
    with pytest.raises(InvalidBrokerAccount, match="must be named"):
        broker_auth.write_broker_files(files, [], [BrokerAccount("GATEWAY1", GOOD_HASH)])
