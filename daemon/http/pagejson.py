"""The web page's JSON: history rows and live snapshots as plain objects (docs/page.md documents them).

Every time is given twice: `ts`-style POSIX seconds, and ISO-8601 in the configured
time zone (`*_iso`), so a script need not know the zone and the page shows local time.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from daemon.http.live import LiveCamera, LiveNpu
from daemon.state.browse import AlertBrief, CameraFigures, Hit, NpuFigures, TimelineEntry, WindowPage
from daemon.state.eventbrowse import EventEntry, EventPage
from daemon.state.history import AlertRow, SummaryRow, WindowRow
from daemon.times import iso


def when(ts: float | None, zone: tzinfo) -> str | None:
    return None if ts is None else iso(ts, zone, "seconds")


def window_json(w: WindowRow, zone: tzinfo) -> dict[str, Any]:
    return {"id": w.id, "camera": w.camera, "start": w.start, "end": w.end, "duration": round(w.end - w.start, 3),
            "recorded": w.recorded, "recorded_iso": when(w.recorded, zone), "analysed": w.analysed,
            "reason": w.reason, "change": w.change, "trigger": w.trigger, "zones": sorted(w.zones),
            "regions": [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "area": r.area} for r in w.regions],
            "frame_ts": list(w.frame_ts)}


def entry_json(e: TimelineEntry, zone: tzinfo, frames: int = 0) -> dict[str, Any]:
    """`frames`: how many of the window's frames the daemon still holds (the middle one is the thumbnail)."""
    return {**window_json(e.window, zone),
            "thumbnail": f"/api/windows/{e.window.id}/frames/{frames // 2}.jpg" if frames else None,
            "descriptions": [{"prompt": p, "text": t} for p, t in e.descriptions],
            "alerts": [brief_json(a) for a in e.alerts]}


def brief_json(a: AlertBrief) -> dict[str, Any]:
    return {"id": a.id, "rule": a.rule, "severity": a.severity, "text": a.text,
            "snapshot": f"/api/alerts/{a.id}/snapshot.jpg" if a.has_snapshot else None}


def event_entry_json(entry: EventEntry, zone: tzinfo) -> dict[str, Any]:
    """An event on the timeline: `seq` pages (`before`), `id` names it (`/api/events/{id}`)."""
    e = entry.event
    return {"id": e.id, "seq": entry.seq, "camera": e.camera, "start": e.start, "start_iso": when(e.start, zone),
            "end": e.end, "end_iso": when(e.end, zone), "last_change": e.last_change,
            "duration": round(e.duration, 3), "status": entry.status, "state": e.state, "ended_by": e.ended_by,
            "opened": entry.opened, "opened_iso": when(entry.opened, zone), "story": e.story,
            "story_from": e.story_from, "descriptions": [{"window_start": d.window_start, "window_end": d.window_end,
                                                          "text": d.text} for d in e.descriptions],
            "rules": list(e.rules), "reasons": list(e.reasons), "zones": sorted(e.zones),
            "triggers": list(e.triggers), "box": None if e.box is None else list(e.box), "changed_windows": e.windows,
            "keyframe": f"/api/events/{e.id}/keyframe.jpg" if entry.keyframe else None, "keyframe_ts": e.snapshot_ts,
            "alerts": [brief_json(a) for a in entry.alerts]}


def event_page_json(page: EventPage, zone: tzinfo) -> dict[str, Any]:
    """The event with its analysed windows (each with its answers) and its alerts, with message ids."""
    answers: dict[int | None, list[dict[str, Any]]] = {}
    for r, mid in zip(page.results, page.result_ids):
        answers.setdefault(r.window_id, []).append(
            {"prompt": r.result.prompt_id, "text": r.result.text, "choice": r.result.choice, "message_id": mid})
    return {**event_entry_json(page.entry, zone),
            "windows": [{**window_json(w, zone), "link": f"#/window/{w.id}", "results": answers.get(w.id, [])}
                            for w in page.windows],
            "alerts": [alert_json(a, zone, mid) for a, mid in zip(page.alerts, page.alert_ids)]}


def alert_json(row: AlertRow, zone: tzinfo, message_id: str | None = None,
               window_id: int | None = None) -> dict[str, Any]:
    a = row.alert
    out = {"id": row.id, "camera": a.camera, "rule": a.rule, "severity": a.severity, "text": a.text,
           "ts": a.ts, "ts_iso": when(a.ts, zone), "window_start": a.window_start, "window_end": a.window_end,
           "probability": a.probability, "zones": sorted(a.zones), "trigger": a.trigger,
           "snapshot": f"/api/alerts/{row.id}/snapshot.jpg" if a.snapshot_jpeg is not None else None}
    if message_id is not None:
        out["message_id"] = message_id
    if window_id is not None:
        out["window_id"] = window_id
    return out


def window_page_json(page: WindowPage, zone: tzinfo, frames: int) -> dict[str, Any]:
    """`frames`: how many of the window's frames the daemon still holds (GET .../frames/{i}.jpg)."""
    results = [{"prompt": r.result.prompt_id, "question": r.result.question, "text": r.result.text,
                "choice": r.result.choice, "probabilities": r.result.probabilities, "ts": r.result.ts,
                "ts_iso": when(r.result.ts, zone), "tokens": r.token_count, "stop_reason": r.result.stop_reason,
                "message_id": mid, "seconds": round((r.result.timings.vit_ms + r.result.timings.prefill_ms
                                                     + r.result.timings.decode_ms) / 1000, 3)}
               for r, mid in zip(page.results, page.result_ids)]
    return {**window_json(page.window, zone), "results": results,
            "alerts": [alert_json(a, zone, mid) for a, mid in zip(page.alerts, page.alert_ids)],
            "frames": [f"/api/windows/{page.window.id}/frames/{i}.jpg" for i in range(frames)]}


def summary_json(row: SummaryRow, zone: tzinfo) -> dict[str, Any]:
    s = row.summary
    return {"id": row.id, "job": s.job, "text": s.text, "period_start": s.period_start,
            "period_start_iso": when(s.period_start, zone), "period_end": s.period_end,
            "period_end_iso": when(s.period_end, zone), "ts": s.ts, "ts_iso": when(s.ts, zone),
            "counts": s.counts, "cameras": list(s.cameras)}


def hit_json(h: Hit, zone: tzinfo) -> dict[str, Any]:
    link = (f"#/window/{h.window_id}" if h.window_id is not None else f"#/event/{h.event_id}" if h.event_id
            else f"#/alerts/{h.kind}-{h.id}")  # a summary (or an alert without its window): its row on that page
    return {"kind": h.kind, "id": h.id, "camera": h.camera, "ts": h.ts, "ts_iso": when(h.ts, zone), "text": h.text,
            "window_id": h.window_id, "event_id": h.event_id, "link": link}


def camera_json(c: LiveCamera, figures: CameraFigures, zone: tzinfo) -> dict[str, Any]:
    return {"name": c.name, "state": c.state, "error": c.error,
            # a new URL for each new picture: the browser's cache keeps the one it has
            "picture": f"/api/cameras/{c.name}/picture.jpg?window={c.picture_start:.3f}"
            if c.picture_start is not None else None,
            "picture_start": c.picture_start, "description": figures.description,
            "described_at": figures.described_at, "described_at_iso": when(figures.described_at, zone),
            "last_hour": {"analysed": figures.analysed, "skipped": figures.skipped},
            "gate_reason": figures.last_reason, "last_window_id": figures.last_window_id,
            "masks": [[list(p) for p in polygon] for polygon in c.masks],
            "zones": {name: [list(p) for p in polygon] for name, polygon in c.zones}}


def npu_json(npus: list[LiveNpu], queue: int, figures: NpuFigures, span: float) -> dict[str, Any]:
    return {"queue": queue, "span_seconds": span, "windows": figures.windows,
            "seconds_per_window": None if figures.seconds_per_window is None else round(figures.seconds_per_window, 3),
            "decode_tokens_per_second": (None if figures.decode_tokens_per_second is None
                                         else round(figures.decode_tokens_per_second, 1)),
            "npus": [{"label": n.label, "load": round(n.load, 3), "kv_path": n.kv_path} for n in npus]}
