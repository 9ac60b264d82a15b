"""Python's etcd3 client (PyPI `etcd3`, on grpcio) against one server: the calls an
application makes, each checked against what etcd answers. Usage: etcd3_client.py HOST PORT.
Exits non-zero, with the failed check on stderr, on the first difference."""

import sys
import threading

import etcd3
import etcd3.exceptions


def check(condition, what):
    if not condition:
        sys.exit(f"etcd3 check failed: {what}")


def main(host, port):
    client = etcd3.client(host=host, port=port, timeout=10)

    # KV: put, get, prefix, range, delete, revisions.
    client.delete_prefix("app/")
    client.put("app/config/a", "1")
    client.put("app/config/b", "2")
    value, meta = client.get("app/config/a")
    check(value == b"1", f"get a: {value!r}")
    check(meta.version == 1 and meta.create_revision == meta.mod_revision, "a's revisions")
    check(client.get("app/missing") == (None, None), "get of a missing key")
    prefix = sorted((v, m.key) for v, m in client.get_prefix("app/config/"))
    check(prefix == [(b"1", b"app/config/a"), (b"2", b"app/config/b")], f"prefix: {prefix}")
    client.put("app/config/a", "1b")
    value, meta = client.get("app/config/a")
    check(value == b"1b" and meta.version == 2, "second put bumps the version")
    check(client.delete("app/config/b") is True, "delete of a present key")
    check(client.delete("app/config/b") is False, "delete of a missing key")

    # Compare-and-set, as configuration stores and schedulers use it.
    check(client.put_if_not_exists("app/leader", "me") is True, "put_if_not_exists on absent")
    check(client.put_if_not_exists("app/leader", "you") is False, "put_if_not_exists on present")
    check(client.replace("app/leader", "me", "me2") is True, "replace with the right value")
    check(client.replace("app/leader", "me", "me3") is False, "replace with a stale value")
    succeeded, responses = client.transaction(
        compare=[client.transactions.version("app/leader") > 0],
        success=[client.transactions.get("app/leader")],
        failure=[client.transactions.put("app/leader", "nobody")],
    )
    check(succeeded, "transaction on version")
    check(responses[0][0][0] == b"me2", f"transaction's get: {responses!r}")

    # Leases: grant, keep alive, keys attached, expiry on revoke.
    lease = client.lease(60)
    client.put("app/session", "alive", lease=lease)
    refreshed = list(client.refresh_lease(lease.id))
    check(refreshed and refreshed[0].TTL == 60, f"keep-alive: {refreshed!r}")
    info = client.get_lease_info(lease.id)
    check(info.grantedTTL == 60 and 0 < info.TTL <= 60, f"lease info: {info!r}")
    check(list(info.keys) == [b"app/session"], f"lease keys: {list(info.keys)}")
    lease.revoke()
    check(client.get("app/session") == (None, None), "a revoked lease takes its key")

    # Watch: events from a callback, then cancel.
    seen = []
    arrived = threading.Event()

    def on_event(response):
        for event in response.events:
            seen.append((type(event).__name__, event.key, event.value))
        if len(seen) >= 2:
            arrived.set()

    watch_id = client.add_watch_prefix_callback("app/watched/", on_event)
    client.put("app/watched/x", "1")
    client.delete("app/watched/x")
    check(arrived.wait(10), f"watch events: {seen}")
    check(
        seen == [("PutEvent", b"app/watched/x", b"1"), ("DeleteEvent", b"app/watched/x", b"")],
        f"watch events: {seen}",
    )
    client.cancel_watch(watch_id)

    # Locks: etcd3's Lock is a transaction on a lease; a second holder must wait.
    lock = client.lock("app-lock", ttl=10)
    check(lock.acquire(timeout=5), "first lock acquire")
    other = client.lock("app-lock", ttl=10)
    check(not other.acquire(timeout=1), "a held lock is not granted twice")
    lock.release()
    check(other.acquire(timeout=5), "the lock is granted once released")
    other.release()

    # Cluster and maintenance calls an operator's script makes.
    members = list(client.members)
    check(len(members) == 1 and members[0].client_urls, f"members: {members!r}")
    status = client.status()
    check(status.leader is not None and status.raft_term >= 1, f"status: {status!r}")
    check(status.db_size > 0, "status db size")

    # Compaction, and a second one below it refused with etcd's error.
    revision = client.get_response("app/leader").header.revision
    client.compact(revision)
    try:
        client.compact(revision - 1)
        check(False, "a compaction below the compacted revision succeeded")
    except Exception as error:  # grpc's error type, which etcd3 passes through
        check("compacted" in str(error), f"compaction below the last: {error!r}")

    client.close()
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
