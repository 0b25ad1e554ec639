#!/usr/bin/env bash
# Checks the monitoring assets in examples/monitoring: the alerting rules are valid and pass
# their unit tests (promtool, installed from Debian's `prometheus` package when missing), the
# dashboard is valid JSON whose queries parse as PromQL, and every quay_* metric that the
# rules, their tests and the dashboard use is one the server exports, i.e. is named by a
# string literal in the Rust sources. Exits non-zero, naming the metric and the file, if not.
#
# QUAY_MONITORING_EXTRA_METRICS: space-separated metric names to treat as exported too (for
# a metric whose code is not in this checkout yet).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

MONITORING=examples/monitoring
RULES=$MONITORING/alerts.yaml
RULE_TESTS=$MONITORING/alerts.test.yaml
DASHBOARD=$MONITORING/grafana-dashboard.json
SOURCES=(quay-core/src quay-storage/src quay-replication/src quay-http/src examples/src)

ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then return; fi
    log "installing promtool (Debian package prometheus)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

ensure_promtool
log "promtool: $(promtool --version 2>&1 | head -n1)"

log "checking the alerting rules ($RULES)"
promtool check rules "$RULES"

log "running the alerting rules' unit tests ($RULE_TESTS)"
promtool test rules "$RULE_TESTS"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "checking the dashboard ($DASHBOARD) and the metric names"
if python3 -c 'import yaml' 2>/dev/null; then
    log "parsing YAML with PyYAML"
else
    log "PyYAML is not installed: reading the YAML files' expressions with a regex"
fi
python3 - "$RULES" "$RULE_TESTS" "$DASHBOARD" "$work/dashboard-rules.yaml" "${SOURCES[@]}" <<'PY'
import json
import os
import re
import sys

rules_path, tests_path, dashboard_path, dashboard_rules_path = sys.argv[1:5]
source_dirs = sys.argv[5:]

try:
    import yaml
except ImportError:
    yaml = None

METRIC = re.compile(r"(?<![A-Za-z0-9_:])quay_[A-Za-z0-9_:]*")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
problems = []


def fail(message):
    if message not in problems:
        problems.append(message)
        print("ERROR: " + message, file=sys.stderr)


# --- what the server exports -------------------------------------------------------------
# A name written as a string literal in the Rust sources. The first argument of a
# counter!/gauge!/histogram! macro (or describe_*!) also says the type, so the series that
# Prometheus sees are known exactly: a histogram's _bucket/_sum/_count (never its bare name),
# a gauge's name, a counter's name with _total (the Rust code here writes it; for one that
# leaves it to the exporter, both forms are accepted). Literals outside those macros (constants...) and the names of
# QUAY_MONITORING_EXTRA_METRICS are taken loosely: the name, or its _total, _bucket, _sum
# or _count series.
LITERAL = re.compile(r'"(quay_[A-Za-z0-9_:]+)"')
MACRO = re.compile(
    r'(?<![A-Za-z0-9])(?:describe_)?(counter|gauge|histogram)!\s*\(\s*"(quay_[A-Za-z0-9_:]+)"')
typed = {}
loose = set()
files = 0
for directory in source_dirs:
    if not os.path.isdir(directory):
        fail(f"source folder {directory} does not exist")
        continue
    for root, _, names in os.walk(directory):
        for name in names:
            if not name.endswith(".rs"):
                continue
            files += 1
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            for kind, metric in MACRO.findall(text):
                typed.setdefault(metric, set()).add(kind)
            loose.update(LITERAL.findall(text))
loose -= set(typed)
extra = os.environ.get("QUAY_MONITORING_EXTRA_METRICS", "").split()
loose.update(extra)
if not typed:
    fail(f"found no metric registered in the Rust sources ({files} files under {' '.join(source_dirs)})")

exported = set()
for metric, kinds in typed.items():
    if "histogram" in kinds:
        exported.update(metric + s for s in HISTOGRAM_SERIES)
    if "gauge" in kinds:
        exported.add(metric)
    if "counter" in kinds:
        # Registered without _total, the exporter may or may not add it: accept both.
        exported.update({metric, metric + "_total"} if not metric.endswith("_total") else {metric})


def is_exported(name):
    if name in exported:
        return True
    candidates = {name}
    for suffix in ("_total",) + HISTOGRAM_SERIES:
        if name.endswith(suffix):
            candidates.add(name[: -len(suffix)])
    return bool(candidates & loose)


print(f"exported metrics: {len(typed)} registered in {files} Rust files"
      + (f", plus {' '.join(extra)} from QUAY_MONITORING_EXTRA_METRICS" if extra else ""))


def check_names(path, where, expression):
    for name in sorted(set(METRIC.findall(expression))):
        if not is_exported(name):
            fail(f"{path}: {where}: unknown metric {name} (not exported by the server)")


# --- YAML: the rules' expressions and the tests' input series ------------------------------
def block_values(text, key):
    """Values of `key:` in YAML text, inline or as a | or > block scalar (no PyYAML)."""
    values = []
    lines = text.splitlines()
    pattern = re.compile(r"^(\s*)(?:-\s+)?" + re.escape(key) + r":\s*(.*)$")
    i = 0
    while i < len(lines):
        m = pattern.match(lines[i])
        i += 1
        if not m:
            continue
        value = m.group(2).strip()
        if value[:1] in ("|", ">"):
            indent = len(m.group(1))
            block = []
            while i < len(lines) and (not lines[i].strip()
                                      or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            values.append(" ".join(block))
        else:
            if value[:1] in ("'", '"') and value[-1:] == value[:1]:
                value = value[1:-1]
            values.append(value)
    return values


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text, (yaml.safe_load(text) if yaml else None)


text, doc = load_yaml(rules_path)
if doc is not None:
    exprs = [(f"rule {r.get('alert') or r.get('record')}", str(r["expr"]))
             for g in doc.get("groups") or [] for r in g.get("rules") or []]
else:
    exprs = [(f"expr #{i + 1}", e) for i, e in enumerate(block_values(text, "expr"))]
if not exprs:
    fail(f"{rules_path}: found no rule expression")
for where, expr in exprs:
    check_names(rules_path, where, expr)
print(f"{rules_path}: {len(exprs)} rule expressions checked")

text, doc = load_yaml(tests_path)
if doc is not None:
    series = [("input series", s["series"])
              for t in doc.get("tests") or [] for s in t.get("input_series") or []]
    series += [("test expression", e["expr"])
               for t in doc.get("tests") or [] for e in t.get("promql_expr_test") or []]
else:
    series = [("input series", s) for s in block_values(text, "series")]
    series += [("test expression", e) for e in block_values(text, "expr")]
if not series:
    fail(f"{tests_path}: found no input series")
for where, s in series:
    check_names(tests_path, where, s)
print(f"{tests_path}: {len(series)} input series and test expressions checked")

# --- the dashboard -------------------------------------------------------------------------
try:
    with open(dashboard_path, encoding="utf-8") as f:
        dashboard = json.load(f)
except ValueError as e:
    fail(f"{dashboard_path}: not valid JSON: {e}")
    dashboard = None

if dashboard is not None:
    def panels(items):
        for p in items or []:
            yield p
            yield from panels(p.get("panels"))  # rows, collapsed or not

    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    location = variables.get("location")
    if not location:
        fail(f"{dashboard_path}: no template variable named location")
    else:
        query = location.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        check_names(dashboard_path, "template variable location", query)
    if not any(i.get("name") == "DS_PROMETHEUS" for i in dashboard.get("__inputs") or []):
        fail(f"{dashboard_path}: no DS_PROMETHEUS datasource input")

    # Grafana's own variables, replaced by values that PromQL accepts so that promtool can
    # parse every query; the dashboard's variables only appear inside label matchers.
    grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    recording = []
    count = 0
    for p in panels(dashboard.get("panels")):
        if p.get("type") == "row":
            continue
        title = p.get("title") or f"panel {p.get('id')}"
        targets = [t for t in p.get("targets") or [] if t.get("expr")]
        if not targets:
            fail(f"{dashboard_path}: panel {title!r} has no query")
        for t in targets:
            count += 1
            expr = t["expr"]
            check_names(dashboard_path, f"panel {title!r}", expr)
            for var, value in grafana_vars.items():
                expr = expr.replace(var, value)
            recording.append((f"{title} ({t.get('refId')})", expr))
    if count == 0:
        fail(f"{dashboard_path}: found no panel query")
    print(f"{dashboard_path}: {count} panel queries checked")

    # A rules file of the queries, for `promtool check rules` to parse them.
    with open(dashboard_rules_path, "w", encoding="utf-8") as f:
        f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
        for i, (where, expr) in enumerate(recording):
            f.write(f"      # {where}\n")
            f.write(f"      - record: dashboard_query:{i + 1}\n")
            f.write(f"        expr: {json.dumps(expr)}\n")

if problems:
    print(f"{len(problems)} problem(s) in the monitoring assets", file=sys.stderr)
    sys.exit(1)
PY

log "checking that the dashboard's queries parse as PromQL"
if ! promtool check rules "$work/dashboard-rules.yaml"; then
    log "the dashboard's queries, as promtool read them (dashboard_query:N is the Nth):"
    cat "$work/dashboard-rules.yaml" >&2
    exit 1
fi

log "the monitoring assets are fine"
