"""Offline pickup codes: derivation, QR, hashes, single use, back-off and alarms."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from edge.locker.codes import AttemptGuard, UsedCodes
from protocols.pickup import (
    Grant,
    PickupKey,
    key_check,
    keypad_code,
    parse_qr,
    qr_payload,
    verify_qr,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEY = PickupKey(bytes(range(32)))
GRANT = Grant("bank-1", "0-01", 42, T0 + timedelta(hours=48))


def test_keypad_code_is_deterministic_8_digits_and_bound_to_every_field() -> None:
    code = keypad_code(KEY, GRANT)
    assert len(code) == 8
    assert code.isdigit()
    assert keypad_code(KEY, GRANT) == code
    others = {
        keypad_code(KEY, Grant("bank-2", "0-01", 42, GRANT.expiry)),
        keypad_code(KEY, Grant("bank-1", "0-02", 42, GRANT.expiry)),
        keypad_code(KEY, Grant("bank-1", "0-01", 43, GRANT.expiry)),
        keypad_code(KEY, Grant("bank-1", "0-01", 42, GRANT.expiry + timedelta(seconds=1))),
        keypad_code(PickupKey(bytes(32)), GRANT),
    }
    assert code not in others
    assert len(others) == 5


def test_short_keys_are_refused_and_keys_never_print(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="128 bits"):
        PickupKey(bytes(15))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("t").info("key %s %r", KEY, KEY)
    assert bytes(range(32)).hex() not in caplog.text
    assert "hidden" in caplog.text


def test_key_from_env_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "zz-not-hex")
    with pytest.raises(ValueError, match="K is not hex") as info:
        PickupKey.from_env("K")
    assert "zz-not-hex" not in str(info.value)
    monkeypatch.delenv("K")
    with pytest.raises(ValueError, match=r"K .* not set"):
        PickupKey.from_env("K")


def test_qr_roundtrip_and_tampering() -> None:
    payload = qr_payload(KEY, GRANT)
    entry = parse_qr(payload)
    assert entry is not None
    assert entry.grant == GRANT
    assert verify_qr(KEY, entry)
    tampered = parse_qr(payload.replace(":42:", ":43:"))
    assert tampered is not None
    assert not verify_qr(KEY, tampered)
    assert parse_qr("12345678") is None
    assert parse_qr(payload + "A") is None


def test_key_check_is_keyed_and_bound_to_the_grant() -> None:
    check = key_check(KEY, GRANT)
    assert len(check) == 64
    assert keypad_code(KEY, GRANT) not in check
    assert check == key_check(KEY, GRANT)
    assert check != key_check(PickupKey(bytes(32)), GRANT)  # another key: noticed
    assert check != key_check(KEY, Grant("bank-1", "0-02", 42, GRANT.expiry))


def test_a_grant_opens_nothing_from_its_expiry_on() -> None:
    """The expiry comparison (issue #15): valid strictly before the expiry instant."""
    assert GRANT.valid_at(GRANT.expiry - timedelta(microseconds=1))
    assert not GRANT.valid_at(GRANT.expiry)
    assert not GRANT.valid_at(GRANT.expiry + timedelta(seconds=1))


def test_backoff_grows_exponentially_after_free_failures_and_alarms_on_burst() -> None:
    guard = AttemptGuard(free_failures=3, base=timedelta(seconds=2), alarm_failures=5)
    alarms = []
    now = T0
    for _ in range(3):
        assert guard.check("keypad", now).allowed
        alarms.append(guard.fail("keypad", now))
    assert guard.check("keypad", now).allowed  # typos are free
    alarms.append(guard.fail("keypad", now))  # 4th: 2 s
    verdict = guard.check("keypad", now + timedelta(seconds=1))
    assert not verdict.allowed
    assert verdict.retry_at == now + timedelta(seconds=2)
    now += timedelta(seconds=2)
    assert guard.check("keypad", now).allowed
    alarms.append(guard.fail("keypad", now))  # 5th: 4 s, and the burst alarm
    assert alarms == [False, False, False, False, True]
    assert not guard.check("keypad", now + timedelta(seconds=3.9)).allowed
    assert guard.check("keypad", now + timedelta(seconds=4)).allowed
    assert guard.check("qr:0-02", now).allowed  # scopes are independent


def test_backoff_is_capped_and_forgotten_after_quiet_hour() -> None:
    guard = AttemptGuard(
        free_failures=0, base=timedelta(seconds=1), max_lockout=timedelta(seconds=60)
    )
    for _ in range(20):
        guard.fail("k", T0)
    assert guard.check("k", T0 + timedelta(seconds=60)).allowed
    assert not guard.check("k", T0 + timedelta(seconds=59)).allowed
    guard.fail("k", T0)
    assert guard.check("k", T0 + timedelta(hours=1)).allowed


def test_used_codes_are_remembered_until_expiry() -> None:
    used = UsedCodes()
    used.mark(GRANT)
    assert used.used(GRANT, T0)
    assert not used.used(Grant("bank-1", "0-01", 43, GRANT.expiry), T0)
    assert not used.used(GRANT, GRANT.expiry)  # expired: forgotten (the code is dead anyway)


# Known answers, worked out from the algorithm in docs/lockers.md with the standard library
# alone (hmac.new(key, m, sha256), first 8 bytes big-endian mod 10^8; base32 of the first
# 16 bytes of the "qr|" MAC; the key check is the hex HMAC of "key-check|" + m), and
# written out here so a change to the derivation cannot pass unnoticed. Key: bytes 0..31.
KNOWN_ANSWERS = [
    (
        Grant("bank-1", "0-01", 42, datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),  # 1795608000
        "61879026",
        "SGP1:bank-1:0-01:42:1795608000:DMZUONGZCB4A3UFGFVWFRSWDRE",
        "875cd9086d2a21fd4912444a1fa11e2ef15ac6fd6cd7ebd1232f80d38d449fed",
    ),
    (
        Grant("locker-a", "1-16", 1, datetime.fromtimestamp(1800000000, UTC)),
        "95882825",
        "SGP1:locker-a:1-16:1:1800000000:OTIISBWTUVIKDSG5X5I42COLGM",
        "5b0c3a487a4b0df7de45ba4c355c86d755736cc44e456fff0b5094c8b500b40a",
    ),
]


@pytest.mark.parametrize(("grant", "code", "qr", "check"), KNOWN_ANSWERS)
def test_derivation_known_answers(grant: Grant, code: str, qr: str, check: str) -> None:
    assert keypad_code(KEY, grant) == code
    assert keypad_code(KEY, grant, digits=6) == code[2:]  # the same value mod 10^6
    assert qr_payload(KEY, grant) == qr
    assert key_check(KEY, grant) == check


def test_a_scope_in_lockout_or_alarm_is_never_forgotten_to_make_room() -> None:
    guard = AttemptGuard(free_failures=0, base=timedelta(seconds=60), max_scopes=2)
    guard.fail("keypad", T0)  # locked for 60 s
    guard.fail("scanner", T0)
    # Full of scopes that are locked out: a new name is refused, nothing is forgotten.
    assert not guard.check("intruder", T0).allowed
    assert not guard.check("keypad", T0 + timedelta(seconds=59)).allowed
    # Once the lockouts and the alarm window have passed, an idle scope makes room.
    later = T0 + guard.alarm_window
    assert guard.check("intruder", later).allowed
    assert guard.check("keypad", later).allowed


def test_a_burst_raises_one_alarm_and_refused_attempts_count_towards_it() -> None:
    guard = AttemptGuard(free_failures=1, base=timedelta(seconds=60), alarm_failures=5)
    now = T0
    alarms = [guard.fail("keypad", now), guard.fail("keypad", now)]  # 2nd: locked 60 s
    for _ in range(3):
        assert not guard.check("keypad", now).allowed
        alarms.append(guard.refuse("keypad", now))
    assert alarms == [False, False, False, False, True]
    # the same burst goes on: no second alarm within the window
    assert not any(guard.refuse("keypad", now) for _ in range(20))
    later = now + guard.alarm_window
    assert any(guard.refuse("keypad", later) for _ in range(5))  # a new burst, a new alarm
