"""Encrypted round trips (age, gpg) and one dump written to several storages."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from dbguardian.catalog import LogicalManifest
from tests.conftest import PolicyFactory, Postgres, backup_dir, run_cli
from tests.support.pg import backup, checksums, listed


def age_key(path: Path) -> str:
    result = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    return result.stderr.strip().split("Public key: ")[1]


def gpg_key(home: Path, name: str) -> tuple[Path, Path, str]:
    """A fresh GPG key pair: (public keyring file, secret key file, fingerprint)."""
    home.mkdir(mode=0o700)
    base = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*base, "--quick-gen-key", f"{name} <{name}@example.com>", "default", "default", "never"],
                   check=True, capture_output=True)  # fmt: skip
    listing = subprocess.run([*base, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    public, secret = home / "public.asc", home / "secret.asc"
    subprocess.run([*base, "--armor", "--export", "--output", str(public), fingerprint], check=True, capture_output=True)
    subprocess.run([*base, "--armor", "--export-secret-keys", "--output", str(secret), fingerprint],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)
    return public, secret, fingerprint


def manifest_of(policy: Path, backup_id: str) -> LogicalManifest:
    return LogicalManifest.model_validate_json((backup_dir(policy) / "app" / backup_id / "manifest.json").read_text())


def test_age_round_trip_and_wrong_key(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    recipient = age_key(tmp_path / "identity.txt")
    age_key(tmp_path / "other.txt")
    policy = make_policy(database, encryption={"method": "age", "recipients": [recipient]})
    backup_id = backup(policy)
    stored = backup_dir(policy) / "app" / backup_id / "dump.pgc.zst.age"
    assert stored.read_bytes().startswith(b"age-encryption.org/v1")
    manifest = manifest_of(policy, backup_id)
    assert manifest.encryption is not None
    assert manifest.encryption.model_dump() == {"method": "age", "recipients": [recipient]}
    assert "AGE-SECRET-KEY" not in (backup_dir(policy) / "app" / backup_id / "manifest.json").read_text()

    # Without the key the checksum can still be verified; the contents cannot.
    result = run_cli(policy, "restore", "app", "latest", "--validate-only")
    assert result.returncode == 0, result.stderr
    assert "sha256 matches" in result.stdout and "contents not checked: encrypted, no --identity given" in result.stdout
    result = run_cli(policy, "restore", "app", "latest", "--validate-only", "--identity", str(tmp_path / "identity.txt"))
    assert result.returncode == 0, result.stderr
    assert "archive entries" in result.stdout

    into = dropper(f"{database}_dec")
    result = run_cli(policy, "restore", "app", "latest", "--into", into)
    assert result.returncode == 2 and "this backup is encrypted: pass --identity FILE" in result.stderr
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--identity", str(tmp_path / "other.txt"))
    assert result.returncode == 1
    assert f"cannot decrypt with identity {tmp_path / 'other.txt'}" in result.stderr
    assert "no identity matched any of the recipients" in result.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{into}%'") == "0"

    result = run_cli(
        policy, "restore", "app", "latest", "--into", into, DBGUARDIAN_IDENTITY_FILE=str(tmp_path / "identity.txt")
    )
    assert result.returncode == 0, result.stderr
    assert checksums(pg, into) == checksums(pg, database)


def test_gpg_round_trip_leaves_user_keyring_alone(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    public, secret, fingerprint = gpg_key(tmp_path / "keys", "backup")
    _, wrong_secret, _ = gpg_key(tmp_path / "wrong", "intruder")
    home = tmp_path / "home"
    home.mkdir()
    encryption = {"method": "gpg", "recipients": [fingerprint[-16:]], "keyring": str(public)}
    policy = make_policy(database, globals=True, encryption=encryption)
    result = run_cli(policy, "backup", "app", HOME=str(home))
    assert result.returncode == 0, result.stderr
    backup_id = result.stdout.strip().splitlines()[-1]
    assert not (home / ".gnupg").exists()  # the user's keyring is never touched
    manifest = manifest_of(policy, backup_id)
    assert manifest.encryption is not None
    assert manifest.encryption.model_dump() == {"method": "gpg", "recipients": [fingerprint]}
    assert sorted(manifest.objects) == ["dump", "globals"]
    assert manifest.objects["dump"].key.endswith("dump.pgc.zst.gpg")

    into = dropper(f"{database}_gpg")
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--identity", str(wrong_secret), HOME=str(home))
    assert result.returncode == 1 and "cannot decrypt with identity" in result.stderr
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--identity", str(secret), HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert checksums(pg, into) == checksums(pg, database)
    assert not (home / ".gnupg").exists()


def two_locals(tmp_path: Path, mirror: Path) -> dict[str, object]:
    return {
        "storage": {
            "local": {"type": "local", "path": str(tmp_path / "backups")},
            "mirror": {"type": "local", "path": str(mirror)},
        }
    }


def test_one_dump_to_two_storages(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    policy = make_policy(database, storage=["local", "mirror"], extra=two_locals(tmp_path, mirror))
    backup_id = backup(policy)
    [entry] = listed(policy)
    assert entry["storage"] == ["local", "mirror"]
    first = (backup_dir(policy) / "app" / backup_id / "dump.pgc.zst").read_bytes()
    assert (mirror / "app" / backup_id / "dump.pgc.zst").read_bytes() == first
    into = dropper(f"{database}_m")
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--from", "mirror", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["storage"] == "mirror"
    assert checksums(pg, into) == checksums(pg, database)


def test_failed_destination_is_reported_not_hidden(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    mirror = tmp_path / "small"
    mirror.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mirror)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        policy = make_policy(database, storage=["local", "mirror"], extra=two_locals(tmp_path, mirror))
        result = run_cli(policy, "backup", "app")
        assert result.returncode == 1
        assert "but failed on mirror: " in result.stderr and "no space left on device" in result.stderr
        [entry] = listed(policy)
        assert entry["storage"] == ["local"]  # valid where its manifest landed
        assert [p for p in mirror.rglob("*") if p.is_file()] == []
        state = json.loads((tmp_path / "state" / "targets" / "app.json").read_text())
        assert state["last_attempt"]["result"] == "partial"
    finally:
        subprocess.run(["umount", str(mirror)], check=True)
