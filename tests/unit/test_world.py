"""The synthetic world generator: contracts, determinism, chunking, seed labels, bad rows, CLI."""

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lantern_batch.cli import main
from lantern_batch.io import list_parquet_files, read_table
from lantern_batch.policy import pair_id, score_pair
from lantern_batch.schema import (
    APPLY_LOG_SCHEMA,
    DIMENSIONS,
    JOBS_SCHEMA,
    MEMBERS_SCHEMA,
    PAIRS_SCHEMA,
    SEED_SCHEMA,
    validate_table,
)
from lantern_batch.world import HOSTILE_LINES, GenerateConfig, generate, run_generate

TABLES = {
    "members": MEMBERS_SCHEMA,
    "jobs": JOBS_SCHEMA,
    "pairs": PAIRS_SCHEMA,
    "seed": SEED_SCHEMA,
    "apply_log": APPLY_LOG_SCHEMA,
}
SMALL = dict(num_members=50, num_jobs=25, num_pairs=300, num_seed=100)


def _read(world, name):
    return read_table(str(world / name))


def _gen(path, **kw):
    cfg = GenerateConfig(out=str(path), **{**SMALL, **kw})
    assert run_generate(cfg) == 0
    return path


def _by_id(table, key):
    return {r[key]: r for r in table.to_pylist()}


def test_tables_match_the_contract_and_validate_clean(tiny_world):
    for name, schema in TABLES.items():
        table = _read(tiny_world, name)
        assert table.schema.equals(schema, check_metadata=False), name
    assert _read(tiny_world, "members").num_rows == 60
    assert _read(tiny_world, "jobs").num_rows == 30
    assert _read(tiny_world, "pairs").num_rows == 400
    assert _read(tiny_world, "seed").num_rows == 200
    for name in ("members", "jobs", "pairs"):
        result = validate_table(_read(tiny_world, name), name)
        assert result.errors.num_rows == 0, result.counts
    assert (tiny_world / "resolved_config.yaml").is_file()


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    a, b, c = _gen(tmp_path / "a"), _gen(tmp_path / "b"), _gen(tmp_path / "c", seed=8)
    for name in TABLES:
        assert _read(a, name).equals(_read(b, name)), name
    assert not _read(a, "members").equals(_read(c, "members"))
    assert not _read(a, "pairs").equals(_read(c, "pairs"))


def test_chunked_output_equals_unchunked(tmp_path):
    whole = _gen(tmp_path / "whole", inject_bad_rows=0.05)
    chunked = _gen(tmp_path / "chunked", inject_bad_rows=0.05, chunk_rows=37)
    assert len(list_parquet_files(str(chunked / "pairs"))) > 5
    assert len(list_parquet_files(str(whole / "pairs"))) == 1
    for name in TABLES:
        assert _read(whole, name).equals(_read(chunked, name)), name


def test_members_and_jobs_are_coherent(tiny_world):
    members = _read(tiny_world, "members").to_pylist()
    for m in members:
        assert m["skills"] and m["current_title"] and m["headline"] and m["summary"]
        assert 2 <= len(m["experience"]) <= 5
        current = [e for e in m["experience"] if e["end_year"] is None]
        assert len(current) == 1 and current[0]["title"] == m["current_title"]
        assert all(e["start_year"] <= (e["end_year"] or 2026) for e in m["experience"])
    years = {lvl: [m["years_experience"] for m in members if m["seniority"] == lvl] for lvl in ("entry", "senior")}
    if years["entry"] and years["senior"]:
        assert max(years["entry"]) < min(years["senior"]) + 1
    jobs = _read(tiny_world, "jobs").to_pylist()
    assert {j["workplace_type"] for j in jobs} <= {"onsite", "hybrid", "remote"}
    for j in jobs:
        text = j["description"]
        # A full posting: company boilerplate, requirements, benefits and an EEO statement.
        assert f"About {j['company']}" in text and "What we offer" in text
        assert "equal opportunity" in text
        assert all(s in text for s in j["required_skills"])
        assert len(text) > 800


def test_seed_labels_follow_the_policy_and_cover_all_classes(tiny_world):
    members = _by_id(_read(tiny_world, "members"), "member_id")
    jobs = _by_id(_read(tiny_world, "jobs"), "job_id")
    seed = _read(tiny_world, "seed").to_pylist()
    pairs = _read(tiny_world, "pairs")
    pair_keys = set(zip(pairs.column("member_id").to_pylist(), pairs.column("job_id").to_pylist(), strict=True))
    assert len({r["pair_id"] for r in seed}) == len(seed)
    for row in seed:
        assert (row["member_id"], row["job_id"]) in pair_keys
        assert row["pair_id"] == pair_id(row["member_id"], row["job_id"])
        assert row["source"] == "policy"
        res = score_pair(members[row["member_id"]], jobs[row["job_id"]])
        assert row["fit_label"] == res.fit_label
        assert row["dimension_scores"] == {d: res.dimension_scores[d] for d in DIMENSIONS}
        assert row["fit_label"] in row["explanation"]
    assert set(Counter(r["fit_label"] for r in seed)) == {"High", "Medium", "Low"}


def test_demo_seed_is_roughly_balanced(tmp_path):
    summary = generate(GenerateConfig(out=str(tmp_path / "demo")))
    assert summary["seed"] == 1500
    for label, share in (("high", 0.30), ("medium", 0.35), ("low", 0.35)):
        assert abs(summary[f"seed_{label}"] / 1500 - share) < 0.08, summary


def test_candidate_sets_mix_strong_and_poor_matches(tiny_world, tmp_path):
    members = _by_id(_read(tiny_world, "members"), "member_id")
    jobs = _by_id(_read(tiny_world, "jobs"), "job_id")
    labels = Counter(score_pair(members[m], jobs[j]).fit_label for m, j in zip(
        _read(tiny_world, "pairs").column("member_id").to_pylist(),
        _read(tiny_world, "pairs").column("job_id").to_pylist(), strict=True))
    assert labels["High"] >= 0.08 * 400 and labels["Low"] >= 0.2 * 400, labels

    def high_share(world):
        m = _by_id(_read(world, "members"), "member_id")
        j = _by_id(_read(world, "jobs"), "job_id")
        p = _read(world, "pairs").to_pylist()
        return sum(score_pair(m[r["member_id"]], j[r["job_id"]]).fit_label == "High" for r in p) / len(p)

    size = dict(num_members=100, num_jobs=200, num_pairs=1000)
    strong = _gen(tmp_path / "strong", candidate_mix={"strong": 1, "partial": 0, "poor": 0}, **size)
    poor = _gen(tmp_path / "poor", candidate_mix={"strong": 0, "partial": 0, "poor": 1}, **size)
    assert high_share(strong) > 0.3 and high_share(poor) < 0.05


def test_pairs_are_unique_and_some_carry_a_query(tiny_world):
    pairs = _read(tiny_world, "pairs")
    keys = list(zip(pairs.column("member_id").to_pylist(), pairs.column("job_id").to_pylist(), strict=True))
    assert len(set(keys)) == len(keys)
    with_query = pairs.column("query").drop_null()
    assert 0.1 * len(keys) < len(with_query) < 0.6 * len(keys)


def test_apply_log_covers_pairs_and_follows_fit(tmp_path):
    world = _gen(tmp_path / "w", num_members=200, num_jobs=80, num_pairs=2000, num_seed=10)
    log = _read(world, "apply_log")
    pairs = _read(world, "pairs")
    assert log.column("member_id").equals(pairs.column("member_id"))
    assert log.column("job_id").equals(pairs.column("job_id"))
    assert log.column("event_at").null_count == 0
    members = _by_id(_read(world, "members"), "member_id")
    jobs = _by_id(_read(world, "jobs"), "job_id")
    applied: dict[str, list[bool]] = {"High": [], "Medium": [], "Low": []}
    for r in log.to_pylist():
        applied[score_pair(members[r["member_id"]], jobs[r["job_id"]]).fit_label].append(r["applied"])
    rate = {k: sum(v) / max(len(v), 1) for k, v in applied.items()}
    assert rate["High"] > rate["Medium"] > rate["Low"], rate
    assert 0 < rate["Low"] < 0.15 and rate["High"] < 0.9  # noisy, not deterministic in fit


def test_hostile_summaries_keep_honest_labels(tmp_path):
    calm = _gen(tmp_path / "calm", hostile_fraction=0.0)
    hostile = _gen(tmp_path / "hostile", hostile_fraction=1.0)
    summaries = _read(hostile, "members").column("summary").to_pylist()
    assert all(any(h in s for h in HOSTILE_LINES) for s in summaries)
    assert not any(any(h in s for h in HOSTILE_LINES) for s in _read(calm, "members").column("summary").to_pylist())
    assert _read(calm, "seed").column("fit_label").equals(_read(hostile, "seed").column("fit_label"))
    assert all("ignore" not in e.lower() for e in _read(hostile, "seed").column("explanation").to_pylist())


MEMBER_REASONS = {"null_id:member_id", "duplicate_id", "bad_list_element:skills", "text_too_long:summary",
                  "empty_text:current_title"}
JOB_REASONS = {"null_id:job_id", "duplicate_id", "bad_list_element:required_skills", "text_too_long:description",
               "empty_text:description"}
#: Injected rows the input contract accepts (seniority outside the enum is kept as text, an
#: unknown workplace type is "unknown"): the id suffix of their kind -> the column and the
#: values the good row holds.
RELAXED = {"members": {"-x4": ("seniority", {"wizard", "Senior ", "L7"})},
           "jobs": {"-x4": ("workplace_type", {"unknown"}), "-x6": ("seniority", {"grand master"})}}
PAIR_REASONS = {"null_id:member_id", "null_id:job_id", "duplicate_pair"}


def test_injected_bad_rows_get_the_expected_reasons(tmp_path):
    kw = dict(num_members=200, num_jobs=100, num_pairs=600, num_seed=50)
    clean = _gen(tmp_path / "clean", **kw)
    dirty = _gen(tmp_path / "dirty", inject_bad_rows=0.25, **kw)
    for name, expected in (("members", MEMBER_REASONS), ("jobs", JOB_REASONS), ("pairs", PAIR_REASONS)):
        result = validate_table(_read(dirty, name), name)
        assert set(result.errors.column("reason").to_pylist()) == expected, name
        # The good rows of the dirty world are exactly the clean world plus the injected rows
        # the contract accepts.
        good = result.good
        for suffix, (column, values) in RELAXED.get(name, {}).items():
            key = "member_id" if name == "members" else "job_id"
            relaxed = pc.ends_with(good[key], suffix)
            assert pc.sum(relaxed).as_py() > 0, (name, suffix)
            assert set(good.filter(relaxed).column(column).to_pylist()) <= values, (name, suffix)
            good = good.filter(pc.invert(relaxed))
        if name == "pairs":
            known_m = pa.array(_read(clean, "members").column("member_id"))
            known_j = pa.array(_read(clean, "jobs").column("job_id"))
            known = pc.and_(pc.is_in(good["member_id"], value_set=known_m), pc.is_in(good["job_id"], value_set=known_j))
            assert pc.sum(pc.invert(known)).as_py() > 0  # pairs pointing to unknown ids
            good = good.filter(known)
        expected_good = validate_table(_read(clean, name), name).good
        assert good.equals(expected_good), name
    for name in ("seed", "apply_log"):
        assert _read(dirty, name).equals(_read(clean, name)), name


def test_dirty_fixture_has_errors(tiny_world_dirty):
    result = validate_table(_read(tiny_world_dirty, "members"), "members")
    ids = result.good.column("member_id").to_pylist()
    assert sum("-x" not in i for i in ids) == 60 and result.errors.num_rows > 0
    pairs = validate_table(_read(tiny_world_dirty, "pairs"), "pairs")
    assert pairs.errors.num_rows > 0


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["generate", "--out", str(out), "--num-pairs", "200", "--num-members", "40",
               "--num-jobs", "20", "--seed", "3", "--set", "inject_bad_rows=0.02"])
    assert rc == 0
    assert _read(out, "pairs").num_rows >= 200
    assert _read(out, "seed").num_rows == 200  # num_seed (1500) is capped at num_pairs
    assert "inject_bad_rows: 0.02" in (out / "resolved_config.yaml").read_text()


def test_cli_rejects_impossible_sizes_and_dry_run_plans(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "x"), "--num-members", "2", "--num-jobs", "3",
                 "--num-pairs", "7"]) == 2
    assert "num_pairs" in capsys.readouterr().err
    assert main(["generate", "--dry-run", "--num-pairs", "1000"]) == 0
    out = capsys.readouterr().out
    assert "pairs: 1000" in out and not (tmp_path / "x").exists()


def test_generate_to_s3(s3_server):
    uri = s3_server.uri("world")
    assert run_generate(GenerateConfig(out=uri, **SMALL)) == 0
    for name, schema in TABLES.items():
        assert read_table(f"{uri}/{name}").schema.equals(schema, check_metadata=False)
    assert read_table(f"{uri}/pairs").num_rows == 300


@pytest.mark.parametrize("bad", [{"num_members": 0}, {"inject_bad_rows": 0.9}, {"query_fraction": 2}])
def test_config_bounds(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        GenerateConfig(**bad)
