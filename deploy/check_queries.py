#!/usr/bin/env python3
"""Checks the queries of the Switchyard dashboard and recording rules against a live stack.

Every panel target and template variable of the Grafana dashboard, and every recording rule
(alerts are left out: they are meant to be empty), is checked in two steps:

1. Each `switchyard_...` metric it names must be in the gateway's /metrics exposition (a
   histogram's _bucket, _sum and _count included) or be a recording rule. A query that fails
   here is reported UNKNOWN-METRIC and not sent to Prometheus.
2. It is run against Prometheus (/api/v1/query) and must succeed with a non-empty result (a
   NaN sample counts as data). Otherwise it is reported ERROR or EMPTY.

Grafana variables are replaced first: $__rate_interval -> 1m, $__interval -> 15s,
$__range -> 5m, and $tenant (also ${tenant} and ${tenant:regex}) -> .*

Standard library only; the rule files are read by a small YAML reader that handles the layout
of deploy/prometheus/rules (plain, quoted, and | or > block scalars).

Exit status: 0 when every query is OK, 1 when any is not, 2 on bad input (an unreadable
dashboard, rule file or exposition).

Example:
  deploy/check_queries.py --prometheus http://localhost:9090 \\
      --gateway-metrics http://localhost:8080/metrics \\
      --dashboard deploy/grafana/dashboards/switchyard.json \\
      --rules deploy/prometheus/rules/switchyard-recording.yml
"""

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "tenant": ".*",
}

OK, EMPTY, ERROR, UNKNOWN = "OK", "EMPTY", "ERROR", "UNKNOWN-METRIC"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class InputError(Exception):
    """A file or URL this script needs cannot be read."""


# ---------------------------------------------------------------------------------------------
# Reading inputs.


def read_url(url, timeout):
    """The body of an http(s) or file URL, or of a plain file path, as text."""
    if "://" not in url:
        try:
            with open(url, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise InputError(f"cannot read {url}: {e}") from e
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise InputError(f"cannot fetch {url}: {e}") from e


def exposition_names(text):
    """The metric names of a Prometheus text exposition, with each histogram's and summary's
    _bucket, _sum and _count."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                names.add(parts[2])
                if parts[3] in ("histogram", "summary"):
                    names.update(parts[2] + s for s in HISTOGRAM_SUFFIXES)
            continue
        m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
        if m:
            names.add(m.group(0))
    return names


def dashboard_queries(path):
    """(source, expr) for every panel target, nested panels of rows included, and for every
    Prometheus template variable that label_values() or query_result() can turn into a query."""
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read dashboard {path}: {e}") from e
    if not isinstance(dashboard, dict):
        raise InputError(f"dashboard {path} is not a JSON object")
    # A dashboard exported for sharing wraps the model in {"dashboard": ...}.
    if "panels" not in dashboard and isinstance(dashboard.get("dashboard"), dict):
        dashboard = dashboard["dashboard"]
    queries = []

    def walk(panels):
        for panel in panels or []:
            if not isinstance(panel, dict):
                continue
            title = panel.get("title", "")
            for target in panel.get("targets") or []:
                expr = target.get("expr") if isinstance(target, dict) else None
                if isinstance(expr, str) and expr.strip():
                    source = f'panel {panel.get("id", "?")} "{title}" {target.get("refId", "")}'.rstrip()
                    queries.append((source, expr))
            walk(panel.get("panels"))

    walk(dashboard.get("panels"))
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if not isinstance(var, dict) or var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if not isinstance(query, str):
            continue
        expr = variable_query(query.strip())
        if expr:
            queries.append((f'variable "{var.get("name", "")}"', expr))
    return queries


def variable_query(query):
    """The PromQL query behind a Grafana Prometheus variable query, or None."""
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", query, re.S)
    if m:
        return f"count by ({m.group(2)}) ({m.group(1).strip()})"
    m = re.fullmatch(r"query_result\((.+)\)", query, re.S)
    if m:
        return m.group(1).strip()
    return None


# ---------------------------------------------------------------------------------------------
# A small YAML reader for Prometheus rule files.

ITEM_RE = re.compile(r"^(\s*)-(\s+)([A-Za-z_][\w.-]*)\s*:(?:\s(.*)|)$")
KEY_RE = re.compile(r"^(\s*)([A-Za-z_][\w.-]*)\s*:(?:\s(.*)|)$")


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _blank_or_comment(line):
    s = line.strip()
    return not s or s.startswith("#")


def _plain(text):
    """A plain scalar without its trailing comment."""
    m = re.search(r"(^|\s)#", text)
    if m:
        text = text[: m.start()]
    return text.strip()


def _closing(buf, quote):
    """The index of the quote that ends a quoted scalar's text `buf`, or None."""
    j = 0
    while j < len(buf):
        c = buf[j]
        if quote == "'" and c == "'":
            if buf[j + 1 : j + 2] == "'":
                j += 2
                continue
            return j
        if quote == '"' and c == "\\":
            j += 2
            continue
        if quote == '"' and c == '"':
            return j
        j += 1
    return None


def _unquote(text, quote):
    if quote == "'":
        return text.replace("''", "'")
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "0": "\0", " ": " "}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), text)


def _read_quoted(lines, i, text, quote):
    """A quoted scalar starting on line i with `text` (which begins with the quote), possibly
    folded over the next lines. Returns (value, next line index)."""
    buf = text[1:]
    j = i
    while True:
        end = _closing(buf, quote)
        if end is not None:
            return _unquote(buf[:end], quote), j + 1
        j += 1
        if j >= len(lines):
            raise ValueError(f"unterminated quoted scalar at line {i + 1}")
        buf = buf.rstrip() + " " + lines[j].strip()


def _read_block(lines, i, key_indent, header):
    """A | or > block scalar whose header is on line i. Returns (value, next line index)."""
    m = re.fullmatch(r"([|>])([+-]?)(\d?)([+-]?)\s*(#.*)?", header)
    if not m:
        raise ValueError(f"bad block scalar header {header!r} at line {i + 1}")
    style, chomp = m.group(1), m.group(2) or m.group(4)
    indent = key_indent + int(m.group(3)) if m.group(3) else None
    j = i + 1
    block = []
    while j < len(lines):
        line = lines[j]
        if line.strip() == "":
            block.append("")
            j += 1
            continue
        ind = _indent(line)
        if indent is None:
            if ind <= key_indent:
                break
            indent = ind
        if ind < indent:
            break
        block.append(line[indent:])
        j += 1
    trailing = 0
    while block and block[-1] == "":
        block.pop()
        trailing += 1
    if style == "|":
        text = "\n".join(block)
    else:
        # Folding: the break between two lines of text is a space, k blank lines between them
        # are k breaks; around a more-indented line every break is kept.
        parts, prev, blanks = [], None, 0
        for b in block:
            if b == "":
                blanks += 1
                continue
            if prev is None:
                parts.append("\n" * blanks + b)
            elif prev[0] in " \t" or b[0] in " \t":
                parts.append("\n" * (1 + blanks) + b)
            else:
                parts.append((" " if blanks == 0 else "\n" * blanks) + b)
            prev, blanks = b, 0
        text = "".join(parts)
    if text and chomp != "-":
        text += "\n" * (1 + (trailing if chomp == "+" else 0))
    return text, j


def _read_value(lines, i, key_indent, rest, consumed):
    """The value of a key whose text after the colon is `rest`, on line i. Marks the lines it
    reads in `consumed`. Returns (value or None for a nested block, next line index)."""
    rest = (rest or "").strip()
    if rest.startswith("|") or rest.startswith(">"):
        value, j = _read_block(lines, i, key_indent, rest)
    elif rest.startswith('"') or rest.startswith("'"):
        value, j = _read_quoted(lines, i, rest, rest[0])
    else:
        value = _plain(rest)
        j = i + 1
        if value == "":
            # A nested mapping or sequence follows (labels, annotations, rules): skip it.
            while j < len(lines) and (_blank_or_comment(lines[j]) or _indent(lines[j]) > key_indent):
                j += 1
            return None, j
        more = [value]
        while j < len(lines) and not _blank_or_comment(lines[j]) and _indent(lines[j]) > key_indent:
            more.append(_plain(lines[j]))
            j += 1
        value = " ".join(more)
    consumed.update(range(i + 1, j))
    return value, j


def parse_rules(text):
    """The rules of a Prometheus rule file: a dict per rule with its scalar keys (record or
    alert, expr, for, ...) and "line", the line where the rule starts."""
    lines = text.split("\n")
    # First mark the lines inside block and multi-line quoted scalars, so that no text inside
    # one (an annotation, say) is read as a rule.
    consumed = set()
    for i, line in enumerate(lines):
        if i in consumed:
            continue
        m = ITEM_RE.match(line)
        if m:
            key_indent, rest = len(m.group(1)) + 1 + len(m.group(2)), m.group(4)
        else:
            m = KEY_RE.match(line)
            if not m:
                continue
            key_indent, rest = len(m.group(1)), m.group(3)
        rest = (rest or "").strip()
        if rest[:1] in ("|", ">", '"', "'"):
            _read_value(lines, i, key_indent, rest, consumed)
    rules = []
    for start, line in enumerate(lines):
        if start in consumed:
            continue
        m = ITEM_RE.match(line)
        if not m:
            continue
        key_indent = len(m.group(1)) + 1 + len(m.group(2))
        item = {"line": start + 1}
        value, i = _read_value(lines, start, key_indent, m.group(4), consumed)
        item[m.group(3)] = value
        while i < len(lines):
            cur = lines[i]
            if _blank_or_comment(cur):
                i += 1
                continue
            if _indent(cur) != key_indent:
                break
            km = KEY_RE.match(cur)
            if not km:
                break
            value, i = _read_value(lines, i, key_indent, km.group(3), consumed)
            item[km.group(2)] = value
        if ("record" in item or "alert" in item) and item.get("expr") is not None:
            rules.append(item)
    return rules


def recording_rules(path):
    """(record name, expr) for every recording rule of a rule file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"cannot read rule file {path}: {e}") from e
    try:
        rules = parse_rules(text)
    except ValueError as e:
        raise InputError(f"cannot parse rule file {path}: {e}") from e
    return [(r["record"], r["expr"], r["line"]) for r in rules if r.get("record")]


# ---------------------------------------------------------------------------------------------
# Checking queries.


def substitute(expr):
    """The query with Grafana's variables replaced, and the names of those it does not know."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(3)
        if name in VARIABLES:
            return VARIABLES[name]
        unknown.append(name)
        return m.group(0)

    # ${name}, ${name:format}, $name (the longest name wins: $__rate_interval before $__range).
    out = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z0-9_]+))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, expr)
    return out, unknown


def strip_strings(expr):
    """The query with its string literals emptied, so label values are not read as names."""
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def switchyard_names(expr):
    """The switchyard metric and recording-rule names a query refers to."""
    code = re.sub(r"#[^\n]*", "", strip_strings(expr))
    return sorted({t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", code) if "switchyard_" in t})


def run_query(prometheus, expr, timeout):
    """(status, detail) of an instant query."""
    url = prometheus.rstrip("/") + "/api/v1/query"
    data = urllib.parse.urlencode({"query": expr}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            answer = json.loads(body)
            return ERROR, f'{answer.get("errorType", "")}: {answer.get("error", "")}'.strip(": ")
        except ValueError:
            return ERROR, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return ERROR, str(getattr(e, "reason", e))
    try:
        answer = json.loads(body)
    except ValueError:
        return ERROR, "not a JSON answer"
    if answer.get("status") != "success":
        return ERROR, f'{answer.get("errorType", "")}: {answer.get("error", "")}'.strip(": ")
    data = answer.get("data") or {}
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return OK, data.get("resultType")
    if not result:
        return EMPTY, "no series"
    return OK, f"{len(result)} series"


def one_line(expr):
    return " ".join(expr.split())


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Check that the dashboard's and recording rules' queries name exported metrics and return data.")
    p.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://localhost:9090")
    p.add_argument("--gateway-metrics", required=True,
                   help="the gateway's /metrics URL (a file path or file:// URL also works)")
    p.add_argument("--dashboard", action="append", default=[], help="Grafana dashboard JSON (repeatable)")
    p.add_argument("--rules", action="append", default=[], help="Prometheus rule file (repeatable)")
    p.add_argument("--extra-expr", action="append", default=[], help="one more query to check (repeatable)")
    p.add_argument("--known-metrics", action="append", default=[], metavar="FILE",
                   help="a text file whose switchyard_* names are also accepted, for metrics the gateway "
                        "declares but exposes only after their first event (repeatable)")
    p.add_argument("--names-only", action="store_true", help="check metric names only; query nothing")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP call (default 10)")
    args = p.parse_args(argv)
    if not args.dashboard and not args.rules and not args.extra_expr:
        p.error("nothing to check: give --dashboard, --rules or --extra-expr")

    try:
        queries = []
        for d in args.dashboard:
            queries += [(f"{d}: {s}", e) for s, e in dashboard_queries(d)]
        records = set()
        for r in args.rules:
            for name, expr, line in recording_rules(r):
                records.add(name)
                queries.append((f"{r}:{line}: record {name}", expr))
        queries += [(f"extra #{i + 1}", e) for i, e in enumerate(args.extra_expr)]
        exported = exposition_names(read_url(args.gateway_metrics, args.timeout))
        declared = set()
        for f in args.known_metrics:
            for name in set(re.findall(r"\bswitchyard_[a-z0-9_]*[a-z0-9]", read_url(f, args.timeout))):
                declared.add(name)
                declared.update(name + s for s in HISTOGRAM_SUFFIXES)
    except InputError as e:
        print(f"check_queries: {e}", file=sys.stderr)
        return 2

    if not any(n.startswith("switchyard_") for n in exported):
        print(f"check_queries: {args.gateway_metrics} exposes no switchyard_ metric", file=sys.stderr)
        return 2
    if not queries:
        print("check_queries: no query found", file=sys.stderr)
        return 2

    counts = {OK: 0, EMPTY: 0, ERROR: 0, UNKNOWN: 0}
    # Names first: a query that names an unknown metric is never sent.
    checked = []
    for source, raw in queries:
        expr, unresolved = substitute(raw)
        unknown = [n for n in switchyard_names(expr) if n not in exported and n not in records and n not in declared]
        if unknown:
            checked.append((UNKNOWN, ", ".join(unknown), source, expr))
        elif unresolved:
            checked.append((ERROR, "unknown variable " + ", ".join("$" + v for v in unresolved), source, expr))
        else:
            checked.append((None, "", source, expr))
    for status, detail, source, expr in checked:
        if status is None:
            status, detail = (OK, "names only") if args.names_only else run_query(args.prometheus, expr, args.timeout)
        counts[status] += 1
        print(f"{status:<14} {source}: {one_line(expr)}  [{detail}]")

    bad = len(checked) - counts[OK]
    print(f"{len(checked)} queries: {counts[OK]} OK, {counts[EMPTY]} EMPTY, {counts[ERROR]} ERROR, "
          f"{counts[UNKNOWN]} UNKNOWN-METRIC")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
