"""The blob store contract: content addressing, verified reads, typed errors.

Subclass :class:`BlobStoreContract` and implement ``create_blobs`` (and
``corrupt``, which overwrites a stored blob's bytes behind the store's back, the
way a failing disk or an attacker would, and ``backdate``, which moves a blob's
last put into the past, as time would). See docs/blobs.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import BlobNotFoundError, BlobRef, DamagedStoreError, InvalidInputError
from eskit.blobs import BlobStore

__all__ = ["BlobStoreContract"]

_PNG = bytes(range(256)) * 4096  # 1 MiB of every byte value


class BlobStoreContract:
    """Cases every blob store passes."""

    def create_blobs(self, tmp_path: Path) -> BlobStore:
        raise NotImplementedError

    def corrupt(self, blobs: BlobStore, ref: BlobRef, data: bytes) -> None:
        raise NotImplementedError

    def backdate(self, blobs: BlobStore, ref: BlobRef, seconds: float) -> None:
        raise NotImplementedError

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> Iterator[BlobStore]:
        made = self.create_blobs(tmp_path)
        yield made
        made.close()

    def test_put_returns_the_content_address_and_get_gives_the_bytes_back(
        self, blobs: BlobStore
    ) -> None:
        ref = blobs.put(_PNG, media_type="image/png")
        assert ref.digest == "sha256:" + ref.hex
        assert len(ref.hex) == 64
        assert (ref.size, ref.media_type) == (len(_PNG), "image/png")
        assert blobs.get(ref) == _PNG
        assert blobs.exists(ref)

    def test_the_same_bytes_are_stored_once_and_get_the_same_reference(
        self, blobs: BlobStore
    ) -> None:
        first = blobs.put(b"same")
        again = blobs.put(bytearray(b"same"))
        assert first == again
        assert blobs.delete(first) is True
        assert blobs.delete(again) is False  # one copy was stored, and it is gone

    def test_text_is_stored_as_utf8_with_a_text_media_type(self, blobs: BlobStore) -> None:
        ref = blobs.put("résumé 😀 \u0000")
        assert ref.media_type == "text/plain; charset=utf-8"
        assert blobs.get_text(ref) == "résumé 😀 \u0000"

    def test_empty_blob_round_trips(self, blobs: BlobStore) -> None:
        assert blobs.get(blobs.put(b"")) == b""

    def test_an_unknown_or_deleted_blob_is_a_typed_error_naming_the_digest(
        self, blobs: BlobStore
    ) -> None:
        ref = blobs.put(b"soon gone")
        blobs.delete(ref)
        assert not blobs.exists(ref)
        with pytest.raises(BlobNotFoundError) as caught:
            blobs.get(ref)
        assert caught.value.digest == ref.digest

    def test_damaged_bytes_are_refused_never_returned(self, blobs: BlobStore) -> None:
        ref = blobs.put(b"original bytes")
        self.corrupt(blobs, ref, b"tampered bytes")
        with pytest.raises(DamagedStoreError, match=ref.digest):
            blobs.get(ref)

    @pytest.mark.parametrize("bad", [None, 12, ["a"], {"b": 1}, "\ud800"])
    def test_data_that_is_not_bytes_or_text_is_refused_before_any_write(
        self, blobs: BlobStore, bad: Any
    ) -> None:
        with pytest.raises(InvalidInputError):
            blobs.put(bad)

    def test_a_blob_over_the_limit_is_refused_before_any_write(self, blobs: BlobStore) -> None:
        blobs.max_blob_bytes = 10
        with pytest.raises(InvalidInputError, match="over this store's limit"):
            blobs.put(b"x" * 11)
        assert blobs.get(blobs.put(b"x" * 10)) == b"x" * 10

    @pytest.mark.parametrize("bad", [None, "sha256:00", b"ref"])
    def test_get_of_something_that_is_not_a_blob_ref_is_refused(
        self, blobs: BlobStore, bad: Any
    ) -> None:
        with pytest.raises(InvalidInputError):
            blobs.get(bad)

    def test_threads_putting_the_same_and_different_blobs_at_once_lose_nothing(
        self, blobs: BlobStore
    ) -> None:
        refs: list[BlobRef] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def put(n: int) -> None:
            try:
                mine = [blobs.put(b"shared" * 1000), blobs.put(f"own {n}".encode() * 500)]
                with lock:
                    refs.extend(mine)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len({r.digest for r in refs}) == 17
        for ref in refs:
            assert len(blobs.get(ref)) == ref.size

    # -- what garbage collection needs (eskit.blobs.collect) ---------------------------

    def _last_put(self, blobs: BlobStore, ref: BlobRef) -> float:
        [found] = [b for b in blobs._listing() if b.key == ref.hex]
        assert found.size == ref.size
        return found.last_put

    def test_the_listing_names_every_blob_with_its_size_and_last_put(
        self, blobs: BlobStore
    ) -> None:
        refs = [blobs.put(f"blob {n}".encode() * (n + 1)) for n in range(3)]
        now = blobs._now()
        listed = {b.key: b for b in blobs._listing()}
        assert set(listed) == {ref.hex for ref in refs}
        for ref in refs:
            assert listed[ref.hex].size == ref.size
            assert now - 60 < listed[ref.hex].last_put <= now + 1

    def test_a_put_of_stored_bytes_refreshes_an_old_last_put(self, blobs: BlobStore) -> None:
        ref = blobs.put(b"in use again")
        self.backdate(blobs, ref, 3600)
        old = self._last_put(blobs, ref)
        assert old < blobs._now() - 3000
        assert blobs.put(b"in use again") == ref
        assert self._last_put(blobs, ref) > old + 3000

    def test_delete_idle_spares_a_blob_put_since_the_cutoff(self, blobs: BlobStore) -> None:
        idle, touched, fresh = (blobs.put(b"idle"), blobs.put(b"touched"),
                                blobs.put(b"fresh"))
        self.backdate(blobs, idle, 3600)
        self.backdate(blobs, touched, 3600)
        cutoff = blobs._now() - 600
        blobs.put(b"touched")  # a writer put it again after the listing
        deleted = blobs._delete_idle([idle.hex, touched.hex, fresh.hex, "0" * 64], cutoff)
        assert deleted == [idle.hex]
        assert not blobs.exists(idle)
        assert blobs.get(touched) == b"touched"
        assert blobs.get(fresh) == b"fresh"
        assert blobs._delete_idle([], cutoff) == []
