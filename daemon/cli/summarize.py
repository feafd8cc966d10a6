"""`vlmwatch summarize`: summarise recent history on demand.

    vlmwatch summarize -c config.yaml --since 2h
    vlmwatch summarize -c config.yaml --camera porch --since 24h --json
    vlmwatch summarize -c config.yaml --since 7d --dry-run     # the plan and prompts; no model call

Reads the daemon's history (state_dir/history.sqlite) and runs the model of
the config on this machine; it records and publishes nothing. On the board,
the NPU is shared with a running daemon: --dry-run needs no NPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

from daemon.errors import UsageError, VlmwatchError

DEFAULT_PROMPT = "Summarise what happened."


def add_cli(sub) -> None:
    p = sub.add_parser("summarize", help="summarise recent history on demand (--dry-run: show the plan)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.add_argument("--camera", action="append", metavar="NAME", help="a camera to include (repeat it; default all)")
    p.add_argument("--since", required=True, metavar="DURATION", help="how far back: e.g. 30m, 2h, 24h, 7d, 1w")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"the summary question (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--max-new-tokens", type=int, default=200, help="longest summary in tokens (default 200)")
    p.add_argument("--timezone", help="IANA zone of the times the model reads (default: the config's, or the system's)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its prompts; do not run the model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from daemon.config import load_config
    from daemon.engine.engine import open_engine
    from daemon.engine.prompt_fit import probe
    from daemon.state.events import EventStore
    from daemon.state.history import History
    from daemon.summaries.runner import Summarizer
    from daemon.summaries.timeline import Period, Request
    from daemon.times import parse_duration, zone_info, zone_of

    cfg = load_config(args.config)
    try:
        seconds = parse_duration(args.since, "--since")
        zone = zone_info(args.timezone) if args.timezone else zone_of(cfg.timezone)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    configured = [c.name for c in cfg.cameras]
    unknown = [name for name in args.camera or [] if name not in configured]
    if unknown:
        raise UsageError(f"unknown camera {unknown[0]!r}; the config has: {', '.join(configured)}")
    path = cfg.state_dir / "history.sqlite"
    if not path.is_file():
        raise VlmwatchError(f"no history at {path}: the daemon records it (vlmwatch run -c {args.config}); check"
                            " state_dir in the config")
    if args.dry_run:  # no model call, so no model load: the tokenizer and the graphs' declared limits
        engine = probe(cfg.model, frames=False)
    else:
        engine = open_engine(cfg.model)
    request = Request("on-demand", tuple(args.camera or configured), args.prompt, args.max_new_tokens)
    now = time.time()
    with History(path) as history, contextlib.ExitStack() as stack:
        events = stack.enter_context(EventStore(path, cfg.state_dir / "events")) if cfg.events.enabled else None
        summarizer = Summarizer(history, engine, None, configured, events=events)
        period = Period(now - seconds, now, zone)
        if args.dry_run:
            plan = summarizer.plan(request, period)
            print(json.dumps(plan_json(plan), ensure_ascii=False) if args.json else plan_text(plan))
            return 0
        summary = with_progress(summarizer, request, period)
    from daemon.mqtt.messages import summary_json

    print(json.dumps(summary_json(summary), ensure_ascii=False) if args.json else summary.text)
    return 0


def with_progress(summarizer, request, period):
    """Run the summary, saying on stderr what it will do and when each model call is done: a long
    period takes minutes, which would otherwise pass in silence."""
    import sys

    plan = summarizer.plan(request, period)
    calls, started = len(plan.steps), time.monotonic()
    lines = len(plan.timeline.entries)
    if not calls:
        print(f"summarize: nothing recorded in {period.label()}; no model call", file=sys.stderr, flush=True)
    else:
        print(f"summarize: {lines} timeline line(s) from {period.label()}; {calls} model call(s) at most",
              file=sys.stderr, flush=True)
    steps, done = summarizer.summarize_steps(request, period), 0
    while True:
        try:
            next(steps)
        except StopIteration as end:
            summary = end.value
            if calls:
                print(f"summarize: done: {summary.counts['model_calls']} model call(s) in"
                      f" {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
            return summary
        done += 1
        print(f"summarize: model call {done} of at most {calls} done after {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)


def plan_json(plan) -> dict:
    from daemon.times import iso

    t = plan.timeline
    return {"period": {"start": iso(t.period.start), "end": iso(t.period.end)}, "cameras": list(t.cameras),
            "counts": {**t.counts, "timeline": len(t.entries)},
            "limits": {"max_prompt": plan.max_prompt, "kv_len": plan.kv_len},
            "map_steps": plan.map_steps, "model_calls": len(plan.steps),
            "steps": [{"kind": s.kind, "prompt_tokens": s.tokens, "exact": s.exact,
                       "max_new_tokens": s.max_new_tokens, "prompt": s.prompt} for s in plan.steps]}


def plan_text(plan) -> str:
    from daemon.summaries.timeline import nothing_seen

    t, c = plan.timeline, plan.timeline.counts
    out = [f"Summary of {', '.join(t.cameras)} from {t.period.label()}",
           (f"Timeline: {len(t.entries)} lines from {c['descriptions']} descriptions, {c['answers']} rule answers,"
            f" {c['alerts']} alerts"),
           f"Model: largest prefill {plan.max_prompt} tokens, KV cache {plan.kv_len} tokens"]
    if not plan.steps:
        return "\n".join(out + ["Plan: no model call; the summary will say:", nothing_seen(t)])
    kinds = [s.kind for s in plan.steps]
    if kinds == ["direct"]:
        out.append("Plan: 1 step, the whole timeline in one prompt")
    else:
        merges = kinds.count("merge")
        out.append(f"Plan: {plan.map_steps} map steps, {merges} merge steps, 1 final step"
                   f" ({len(kinds)} model calls at most)")
    for i, s in enumerate(plan.steps, 1):
        size = f"{s.tokens} prompt tokens" if s.exact else f"at most {s.tokens} prompt tokens"
        out += ["", f"--- step {i}/{len(kinds)}: {s.kind}, {size}, answer up to {s.max_new_tokens} tokens", s.prompt]
    return "\n".join(out)
