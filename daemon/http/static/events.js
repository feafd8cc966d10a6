// Events on vlmwatch's page (docs/page.md): an event on the timeline, and an event's own page.
// Loaded before app.js, whose helpers (h, s, api, image, when, badge, link, regionsSvg, shower) run when a page shows.
"use strict";

function showsEvents(q) { // the timeline lists events while the daemon records them, unless asked for windows
  return q.get("of") ? q.get("of") === "events" : info.events;
}

const eventHref = (e) => "#/event/" + encodeURIComponent(e.id);

function ruleBadges(e) { // each rule that fired, coloured by the severity of its alert
  const severity = Object.fromEntries(e.alerts.map((a) => [a.rule, a.severity]));
  return e.rules.map((r) => badge(severity[r] ? `${r} (${severity[r]})` : r, "sev-" + (severity[r] || "info")));
}

function eventFacts(e) {
  return [e.reasons.join(", "), e.zones.length ? "zones: " + e.zones.join(", ") : "",
    e.triggers.length ? "triggers: " + e.triggers.join(", ") : "", `${e.changed_windows} changed window(s)`]
    .filter(Boolean).join(" · ");
}

async function eventEntry(e) {
  const thumb = e.keyframe ? await image(e.keyframe, "keyframe", "thumb") : h("div", { class: "thumb" });
  const said = [...new Set(e.descriptions.map((d) => d.text))];
  return h("li", { class: "card", "data-event": e.id }, h("a", { href: eventHref(e), "aria-label": "event " + e.id }, thumb),
    h("div", {},
      h("a", { href: eventHref(e) }, when(e.start)), " · ", e.camera, " · ", e.duration.toFixed(0) + " s ",
      badge(e.status, "status-" + e.status), ruleBadges(e),
      e.story ? h("p", { class: "story" }, e.story) : said.slice(-3).map((t) => h("p", {}, t)),
      h("p", { class: "dim" }, eventFacts(e))));
}

async function eventPage(id) {
  const show = shower();
  const e = await api("/api/events/" + encodeURIComponent(id));
  const best = e.windows.find((w) => w.end === e.keyframe_ts); // the window the keyframe was taken from
  const union = e.box ? [s("rect", { x: e.box[0], y: e.box[1], width: e.box[2] - e.box[0], height: e.box[3] - e.box[1],
    fill: "none", stroke: "#f0a500", "stroke-width": 2, "stroke-dasharray": "6 4", "vector-effect": "non-scaling-stroke" })] : [];
  const picture = e.keyframe ? await image(e.keyframe, "keyframe of event " + e.id) : h("div", { class: "nopic" }, "no keyframe yet");
  const table = (head, rows) => h("table", {}, h("tr", {}, head.map((t) => h("th", {}, t))), rows);
  show(
    h("h1", {}, `${e.camera} · event · ${when(e.start)}`),
    h("p", {}, link("#/timeline?of=events&camera=" + encodeURIComponent(e.camera), "← events of " + e.camera)),
    h("div", { class: "editor" },
      h("div", {}, h("div", { class: "pic" }, picture, regionsSvg(best ? best.regions : [], union)),
        h("p", { class: "dim" }, "Red: the changed regions of the keyframe's window; dashed: all the event's changes.")),
      h("div", { class: "card" },
        h("h2", {}, "Event"), h("p", {}, badge(e.status, "status-" + e.status), " ", e.ended_by ? "ended by " + e.ended_by : "",
          ruleBadges(e)),
        h("p", { class: "dim" }, `${e.duration.toFixed(1)} s · ${eventFacts(e)}`),
        h("p", { class: "dim" }, "id " + e.id))),
    h("h2", {}, "Story"),
    h("p", { class: "story" }, e.story || "(no story yet: told when the event ends)"),
    e.story_from ? h("p", { class: "dim" }, "told from: " + e.story_from) : null,
    h("h2", {}, "Windows"),
    e.windows.length ? table(["Window", "Answers", "Message id"], e.windows.map((w) => h("tr", {},
      h("td", {}, link(w.link, when(w.start)), h("div", { class: "dim" }, w.reason)),
      h("td", {}, w.results.map((r) => h("div", {}, h("span", { class: "dim" }, r.prompt + ": "), r.choice ? r.choice + " " : "", r.text))),
      h("td", { class: "dim" }, w.results.map((r) => h("div", {}, r.message_id || "—"))))))
      : h("p", { class: "dim" }, "No analysed window in history (pruned, or none analysed yet)."),
    h("h2", {}, "Alerts"),
    e.alerts.length ? table(["Rule", "Alert", "Message id"], e.alerts.map((a) => h("tr", {},
      h("td", {}, badge(a.rule + " (" + a.severity + ")", "sev-" + a.severity)), h("td", {}, a.text),
      h("td", { class: "dim" }, a.message_id || "—")))) : h("p", { class: "dim" }, "No alert."));
}
