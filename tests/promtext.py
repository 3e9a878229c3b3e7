#!/usr/bin/env python3
"""promtext.py — a strict checker of the Prometheus text exposition format
(version 0.0.4, what node_exporter's textfile collector reads), written
from the format's specification, independent of gptline's writer.

    promtext.py FILE [NAME[{LABELS}]...]

Checks every line: comments are "# HELP name text" / "# TYPE name type" or
free text; a family has at most one HELP and one TYPE, both before its
first sample; the samples of a family are contiguous; metric and label
names match the grammar, label values are quoted with only \\\\, \\" and
\\n escapes; no series (name + label set) appears twice; values parse as
Go floats (NaN, +Inf, -Inf allowed); counters end in _total and are not
negative; the file ends with a newline. When python3-prometheus-client is
installed its parser must read the file too.

Prints each sample as `name{k="v",...} value` with labels sorted, so tests
can grep it; exit status 1 with the offending line on the first error.
"""
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r"(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|NaN|[+-]Inf)"
LVAL = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s=%s(?:,%s=%s)*,?)?\})? (%s)(?: (-?[0-9]+))?$"
                    % (NAME, LABEL, LVAL, LABEL, LVAL, VALUE))
PAIR = re.compile(r"(%s)=(%s)" % (LABEL, LVAL))
HELP = re.compile(r"^# HELP (%s) (.*)$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)


def fail(path, n, line, why):
    sys.stderr.write("%s:%d: %s\n  %s\n" % (path, n, why, line))
    sys.exit(1)


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v[1:-1])


def check(path):
    data = open(path, "rb").read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(path, 0, "", "not UTF-8: %s" % e)
    if text and not text.endswith("\n"):
        fail(path, 0, "", "does not end with a newline")
    helps, types, done, seen = {}, {}, set(), set()
    current = None
    out = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("#"):
            m = HELP.match(line)
            if line.startswith("# HELP") and not m:
                fail(path, n, line, "malformed HELP line")
            t = TYPE.match(line)
            if line.startswith("# TYPE") and not t:
                fail(path, n, line, "malformed TYPE line")
            name = (m or t).group(1) if (m or t) else None
            if name:
                table = helps if m else types
                if name in table:
                    fail(path, n, line, "second %s for %s" % ("HELP" if m else "TYPE", name))
                if name in done or name == current:
                    fail(path, n, line, "%s after the samples of %s" % ("HELP" if m else "TYPE", name))
                table[name] = (m.group(2) if m else t.group(2))
            continue
        if not line.strip():
            fail(path, n, line, "blank line")
        s = SAMPLE.match(line)
        if not s:
            fail(path, n, line, "not a sample line")
        name, labels, value = s.group(1), s.group(2) or "", s.group(3)
        family = name
        if family != current:
            if family in done:
                fail(path, n, line, "samples of %s are not contiguous" % family)
            if current:
                done.add(current)
            current = family
        pairs = PAIR.findall(labels)
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            fail(path, n, line, "a label repeated")
        series = (name, tuple(sorted((k, unescape(v)) for k, v in pairs)))
        if series in seen:
            fail(path, n, line, "series repeated")
        seen.add(series)
        kind = types.get(family, "untyped")
        v = float(value.replace("Inf", "inf").replace("NaN", "nan"))
        if kind == "counter":
            if not name.endswith("_total"):
                fail(path, n, line, "counter name without _total")
            if v < 0:
                fail(path, n, line, "negative counter")
        lab = ",".join('%s="%s"' % (k, v) for k, v in series[1])
        out.append("%s%s %s" % (name, "{%s}" % lab if lab else "", value))
    for name in list(helps) + list(types):
        if name not in done and name != current:
            fail(path, 0, name, "HELP/TYPE without samples")
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:
        try:
            list(text_string_to_metric_families(text))
        except Exception as e:  # the reference parser refuses it
            fail(path, 0, "", "prometheus_client cannot parse it: %s" % e)
    return out


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: promtext.py FILE\n")
        return 2
    lines = check(sys.argv[1])
    try:
        sys.stdout.write("".join(l + "\n" for l in lines))
        sys.stdout.flush()
    except BrokenPipeError:  # a reader such as grep -q that stopped early
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
