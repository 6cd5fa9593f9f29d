// Steward console: the live parts, on top of pages that work without JavaScript.
//
// - A run's log (`pre[data-stream]`): Server-Sent Events from the last event id the
//   page holds, like `tail -f`. Only the last `data-window` lines stay in the page,
//   however long the log. While the tab is hidden the stream is closed; when it is
//   shown again it resumes from the last id, so nothing is missed or shown twice.
//   Other events (a step starts or ends, an approval is asked or decided, the run ends)
//   refresh the page's status, controls and steps in place, leaving the log as it is.
// - An incident's timeline (`[data-live]`): the server sends the timeline again when
//   it grows; paused while hidden the same way.
"use strict";

function follow(el, url, onEvent, onEnd) {
  let source = null;
  let done = false;
  function open() {
    if (source || done) return;
    source = new EventSource(url());
    onEvent(source);
    source.addEventListener("end", () => { done = true; close(); if (onEnd) onEnd(); });
  }
  function close() { if (source) { source.close(); source = null; } }
  document.addEventListener("visibilitychange", () => { document.hidden ? close() : open(); });
  if (!document.hidden) open();
}

// Swaps the run's status, controls and steps for the server's current ones — unless
// someone is typing in them (a comment for an approval is never thrown away).
let refreshing = null;
function refreshRunState() {
  if (refreshing) return;
  refreshing = setTimeout(async () => {
    refreshing = null;
    const res = await fetch(location.href, { credentials: "same-origin" });
    if (!res.ok) return;
    const next = new DOMParser().parseFromString(await res.text(), "text/html");
    for (const id of ["run-state", "steps"]) {
      const now = document.getElementById(id);
      const fresh = next.getElementById(id);
      const busy = now && (now.contains(document.activeElement) ||
        Array.from(now.querySelectorAll("input:not([type=hidden]), textarea")).some((f) => f.value));
      if (now && fresh && !busy) now.replaceWith(fresh);
    }
  }, 300);
}

function runLog(pre) {
  const windowLines = parseInt(pre.dataset.window || "2000", 10);
  let last = 0;
  const state = document.getElementById("log-state");
  follow(pre, () => pre.dataset.stream + "?after=" + last, (source) => {
    source.addEventListener("run_event", (msg) => {
      const ev = JSON.parse(msg.data);
      if (ev.id <= last) return;
      last = ev.id;
      if (ev.kind !== "output") refreshRunState();
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      const line = document.createElement("span");
      line.className = "ev " + ev.kind;
      line.dataset.id = ev.id;
      const when = ev.at.substring(11, 19);
      line.textContent = when + " " + (ev.step ? "[" + ev.step + "] " : "") + ev.message + "\n";
      pre.appendChild(line);
      while (pre.childElementCount > windowLines) pre.removeChild(pre.firstElementChild);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
  }, () => {
    if (state) state.textContent = "The run has ended; this is its whole log (the last 2,000 lines).";
    refreshRunState();
  });
}

function liveTimeline(box) {
  follow(box, () => box.dataset.live, (source) => {
    source.addEventListener("timeline", (msg) => { box.innerHTML = msg.data; });
  });
}

document.querySelectorAll("pre[data-stream]").forEach(runLog);
document.querySelectorAll("[data-live]").forEach(liveTimeline);
