"""Crypto-shredding on a real SQLite file: nothing of the erased subject is left to recover."""

import base64
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest

import eskit
from eskit import EveryNEvents, Repository, SQLiteEventStore
from eskit.protection import (
    ERASED,
    DecryptionError,
    LocalKeyProvider,
    PersonalData,
    ProtectedEventStore,
    protect,
)
from eskit.protection.keys import unwrap
from eskit.snapshots import aggregate_type_name
from eskit.stores.sqlite_snapshots import SQLiteSnapshotStore

NAME = "Zebulon Quixotewright-7731"  # bytes that appear nowhere else


@eskit.domain_event("tests.protection.CustomerJoined")
@dataclass(frozen=True)
class CustomerJoined:
    customer_id: str
    name: Annotated[str, PersonalData(subject="customer_id")]
    tier: str


@eskit.domain_event("tests.protection.TierChanged")
@dataclass(frozen=True)
class TierChanged:
    tier: str


class Customer(eskit.Aggregate):
    def __init__(self, aggregate_id: eskit.StreamId) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.tier = ""

    def join(self, customer_id: str, name: str) -> None:
        self.raise_event(CustomerJoined(customer_id, name, "basic"))

    def change_tier(self, tier: str) -> None:
        self.raise_event(TierChanged(tier))

    @eskit.handles(CustomerJoined)
    def _joined(self, event: CustomerJoined) -> None:
        self.name, self.tier = event.name, event.tier

    @eskit.handles(TierChanged)
    def _tier(self, event: TierChanged) -> None:
        self.tier = event.tier


KIND = aggregate_type_name(Customer)


def files_of(path: Path) -> bytes:
    """The database file and its write-ahead log, as an attacker holding the disk reads them."""
    wal = Path(f"{path}-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
def shop(tmp_path: Path) -> ProtectedEventStore:
    store = protect(SQLiteEventStore(tmp_path / "shop.db"),
                    LocalKeyProvider({"m1": b"\x01" * 32}))
    yield store
    store.close()


def test_no_byte_of_the_erased_plaintext_or_its_key_is_left_in_the_file_or_wal(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    snapshots = SQLiteSnapshotStore(shop.inner)
    repo = Repository(shop, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
    for cid, name in (("c1", NAME), ("c2", "Other Person")):
        customer = Customer(f"customer-{cid}")
        customer.join(cid, name)
        customer.change_tier("gold")
        repo.save(customer)
    assert snapshots.latest("customer-c1", KIND) is not None
    row = shop.keys.current(["c1"])["c1"]
    material = unwrap(row, shop.provider).material
    secrets = {
        "plaintext": NAME.encode(), "data key": material, "wrapped key": row.wrapped,
        "data key (base64)": base64.b64encode(material),
    }
    path = tmp_path / "shop.db"
    shop.keys.purge(vacuum=False)  # checkpoint first: the scan must see the main file too
    before = files_of(path)
    # The scan can see what it looks for: the snapshot holds the name in clear, the key
    # table the wrapped key; the data key itself is never written, wrapped or not.
    assert secrets["plaintext"] in before
    assert secrets["wrapped key"] in before
    assert secrets["data key"] not in before

    erasure = shop.erase_subject("c1")

    assert erasure.purge.complete, erasure.purge
    assert erasure.snapshots_deleted == 1
    left = files_of(path)
    assert [what for what, needle in secrets.items() if needle in left] == []
    assert snapshots.latest("customer-c1", KIND) is None
    assert snapshots.latest("customer-c2", KIND) is not None
    # Everything else still works: the aggregate loads, with the redacted name.
    customer = repo.get("customer-c1", Customer)
    assert (customer.name, customer.tier, customer.version) == (ERASED, "gold", 2)
    assert repo.get("customer-c2", Customer).name == "Other Person"


def _tamper(path: Path, sql: str, *args: object) -> None:
    # An attacker with the file drops the append-only trigger first.
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TRIGGER IF EXISTS eskit_events_no_update")
        conn.execute(sql, args)


def test_a_changed_ciphertext_raises_decryption_error_naming_the_event(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    shop.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
    stored = shop.inner.read_stream("customer-c1")[0]
    (group,) = stored.event_data["$pd"]  # one subject: one group
    flipped = base64.b64decode(group["c"])
    flipped = flipped[:12] + bytes([flipped[12] ^ 1]) + flipped[13:]  # past the nonce
    data = {**stored.event_data, "$pd": [{**group, "c": base64.b64encode(flipped).decode()}]}
    _tamper(tmp_path / "shop.db", "UPDATE eskit_events SET data = ? WHERE event_id = ?",
            eskit.codec.encode(data), stored.event_id.bytes)
    with pytest.raises(DecryptionError, match="version 1 of stream 'customer-c1'") as caught:
        shop.read_stream("customer-c1")
    assert caught.value.position == stored.position


def test_an_envelope_copied_to_another_event_does_not_open(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    shop.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
    shop.append("customer-c2", [CustomerJoined("c1", "Decoy", "basic")])  # same subject
    source = shop.inner.read_stream("customer-c1")[0]
    target = shop.inner.read_stream("customer-c2")[0]
    _tamper(tmp_path / "shop.db", "UPDATE eskit_events SET data = ? WHERE event_id = ?",
            eskit.codec.encode({**target.event_data, "$pd": source.event_data["$pd"]}),
            target.event_id.bytes)
    assert shop.read_stream("customer-c1")[0].event_data["name"] == NAME
    with pytest.raises(DecryptionError):
        shop.read_stream("customer-c2")


def test_a_key_row_moved_to_another_subject_does_not_unwrap(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    shop.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
    shop.append("customer-c2", [CustomerJoined("c2", "Other", "basic")])
    with closing(sqlite3.connect(tmp_path / "shop.db")) as conn, conn:
        (wrapped,) = conn.execute(
            "SELECT wrapped FROM eskit_subject_keys WHERE subject = 'c1'").fetchone()
        conn.execute("UPDATE eskit_subject_keys SET wrapped = ? WHERE subject = 'c2'", (wrapped,))
    with pytest.raises(eskit.protection.KeyUnavailableError):
        shop.read_stream("customer-c2")


def test_the_scan_would_see_a_key_deleted_without_secure_delete(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    # The control for the test above: the same scan finds a key that was deleted the
    # plain way (secure_delete off, no VACUUM), so "not found" there means something.
    shop.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
    wrapped = shop.keys.current(["c1"])["c1"].wrapped
    shop.keys._conn.execute("PRAGMA secure_delete=OFF")  # type: ignore[attr-defined]
    assert shop.keys.delete_subject("c1") == 1
    assert shop.keys.purge(vacuum=False).complete
    assert wrapped in files_of(tmp_path / "shop.db")


def test_readers_that_pass_undecodable_events_pass_a_tampered_one_and_keep_their_place(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    for cid in ("c1", "c2", "c3"):
        shop.append(f"customer-{cid}", [CustomerJoined(cid, f"name {cid}", "basic")])
    stored = shop.inner.read_stream("customer-c2")[0]
    moved = shop.inner.read_stream("customer-c1")[0].event_data["$pd"]
    data = {**stored.event_data, "$pd": moved}
    _tamper(tmp_path / "shop.db", "UPDATE eskit_events SET data = ? WHERE event_id = ?",
            eskit.codec.encode(data), stored.event_id.bytes)
    with pytest.raises(DecryptionError):
        list(shop.read_all())
    items = list(shop.read_all(on_undecodable="yield"))
    assert [type(i).__name__ for i in items] == ["Event", "UndecodableEvent", "Event"]
    assert [items[0].event_data["name"], items[2].event_data["name"]] == ["name c1", "name c3"]
    assert items[1].position == stored.position
    assert isinstance(items[1].error, DecryptionError)


def test_an_erasure_through_one_store_object_takes_effect_at_once_for_another(
    shop: ProtectedEventStore, tmp_path: Path
) -> None:
    shop.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
    assert shop.read_stream("customer-c1")[0].event_data["name"] == NAME  # key now cached
    other = protect(SQLiteEventStore(tmp_path / "shop.db"), shop.provider)
    try:
        other.erase_subject("c1", vacuum=False)
    finally:
        other.close()
    assert shop.read_stream("customer-c1")[0].event_data["name"] == ERASED
