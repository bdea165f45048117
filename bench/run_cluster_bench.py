"""Several Orthancs, one archive: the linkage store on SQLite against PostgreSQL, and matched
ingest through one node against two nodes on one PostgreSQL.

    .venv/bin/python bench/run_cluster_bench.py [--rounds 5] [--instances 240]

Uses the tests' own harness: a throw-away PostgreSQL server (tests/pgcluster.py, Debian's
postgresql, with fsync on as in production) and Orthanc processes started as tests/integration/orthanc_server.py starts them.
Every case runs in each of the interleaved rounds; medians of the rounds are reported.

* linkage store: ``record`` (one transaction each, as every coerced instance does) and
  ``lookup`` (a pseudonym's links, its originals unsealed), in one process, one thread;
* ingest: storescu of small CT instances (a RetainPatientIDHashOption rule) into one node
  (Orthanc's index and the stores on PostgreSQL), into two such nodes at once (half each,
  two storescu processes), and into one node on SQLite (Orthanc's index and the stores) as
  the single-node reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration"), str(REPO / "plugin")]

from factory import encode, make_ct  # noqa: E402
from orthanc_server import OrthancServer, storescu, store_statuses  # noqa: E402
from pgcluster import PASSWORD, USER, PostgresCluster  # noqa: E402

from coercion import Keys  # noqa: E402
from coercion.stores.linkage import open_store  # noqa: E402

RULE = "- {name: bench, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:RetainPatientIDHashOption'}\n"
INDEX_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"


def linkage_rates(location, password, count: int) -> tuple[float, float]:
    store = open_store(location, Keys(b"bench-secret-0123456789-0123456789-abcdef"), password)
    tag = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    for i in range(count):
        store.record(f"P-{tag}-{i}", "ISSUER", f"MRN-{i}", "bench")
    recorded = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(count):
        store.lookup(f"P-{tag}-{i}")
    looked = time.perf_counter() - started
    store.close()
    return count / recorded, count / looked


def instances(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ds = make_ct(patient_id=f"MRN-{i % 40}", study_uid=f"2.25.{uuid.uuid4().int}",
                     series_uid=f"2.25.{uuid.uuid4().int}", sop_uid=f"2.25.{uuid.uuid4().int}")
        path = folder / f"{i}.dcm"
        path.write_bytes(encode(ds))
        paths.append(path)
    return paths


def ingest_rate(nodes: list[OrthancServer], files: list[Path]) -> float:
    shares = [files[i::len(nodes)] for i in range(len(nodes))]
    results = {}

    def send(index):
        results[index] = store_statuses(storescu(nodes[index], "BENCH", *shares[index]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(nodes))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    statuses = [s for r in results.values() for s in r]
    if len(statuses) != len(files) or not all(s.startswith(("Success", "Warning")) for s in statuses):
        raise RuntimeError(f"not every instance was stored: {statuses[:5]}")
    return len(files) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=240)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="coercion-cluster-bench-"))
    postgres = PostgresCluster(fsync=True)  # as in production: every commit reaches the disk
    servers: list[OrthancServer] = []
    try:
        linkage_pg = postgres.create_database("linkage_bench")
        index = postgres.create_database("orthanc_index")
        stores = postgres.create_database("coercion")
        del index
        cluster_settings = {
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so", INDEX_PLUGIN],
            "PostgreSQL": {"EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1", "Port": postgres.port,
                           "Database": "orthanc_index", "Username": USER, "Password": "${ORTHANC_PG_PASSWORD}",
                           "Lock": False}}
        shared = root / "shared-storage"
        nodes = [OrthancServer(root / name, rules=RULE, storage=shared, linkage_db=stores,
                               coercion={"DatabasePasswordFile": str(postgres.password_file), "NodeName": name},
                               environment={"ORTHANC_PG_PASSWORD": PASSWORD}, settings=cluster_settings).start(60)
                 for name in ("node-a", "node-b")]
        single = OrthancServer(root / "single-sqlite", rules=RULE).start(60)
        servers = [*nodes, single]
        cases = {
            "linkage record, SQLite": None, "linkage record, PostgreSQL": None,
            "linkage lookup, SQLite": None, "linkage lookup, PostgreSQL": None,
            "ingest, one node on SQLite": [single], "ingest, one node on PostgreSQL": nodes[:1],
            "ingest, two nodes on one PostgreSQL": nodes,
        }
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(args.rounds):
            sqlite_path = root / f"linkage-{round_}.sqlite"
            order = ["sqlite", "postgresql"] if round_ % 2 == 0 else ["postgresql", "sqlite"]
            for backend in order:
                location, password = (sqlite_path, None) if backend == "sqlite" else (linkage_pg, str(postgres.password_file))
                record, lookup = linkage_rates(location, password, args.records)
                label = "SQLite" if backend == "sqlite" else "PostgreSQL"
                rates[f"linkage record, {label}"].append(record)
                rates[f"linkage lookup, {label}"].append(lookup)
            ingest = [name for name, target in cases.items() if target]
            for name in (ingest if round_ % 2 == 0 else ingest[::-1]):
                files = instances(root / f"in-{round_}-{name.split(',')[1].strip().replace(' ', '-')}", args.instances)
                rates[name].append(ingest_rate(cases[name], files))
        print(f"{args.rounds} interleaved rounds; {args.records} linkage records, {args.instances} instances per ingest")
        print("| case | per second (median) | rounds |")
        print("| --- | ---: | --- |")
        for name, values in rates.items():
            unit = "operations" if name.startswith("linkage") else "instances"
            print(f"| {name} | {statistics.median(values):.0f} {unit} | {', '.join(f'{v:.0f}' for v in values)} |")
        two, one = statistics.median(rates["ingest, two nodes on one PostgreSQL"]), \
            statistics.median(rates["ingest, one node on PostgreSQL"])
        print(f"\ntwo nodes / one node on PostgreSQL: {two / one:.2f}x; "
              f"one node PostgreSQL / SQLite: {one / statistics.median(rates['ingest, one node on SQLite']):.2f}x")
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
