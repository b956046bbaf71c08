"""The page at `/` of `longvid serve`, driven in headless Chromium: screenshots and DOM checks.

For each preset (default: memvit_tiny, then rewind_tiny), starts `longvid serve` on
127.0.0.1 with one live camera (MPEG-TS pushed over UDP at 16 fps by PyAV in this
process), opens the page in headless Chromium (puppeteer-core driven by node), and checks
in the DOM that:
  - the health line names the model;
  - the camera's row shows its latest labels ("label (score), ...") or answer ("question -> answer");
  - the "add stream" form (with questions and "every" for an LMM) adds a second camera,
    whose row then shows labels or answers too, and the form is cleared;
  - the rows' ids and sources are the API's;
  - an LMM's rows have a question box that answers: typing a question and Enter shows
    "question -> answer" under it; a classifier's rows have none;
  - the second row's stop button stops that stream (and only it): its row then says
    "stopped" and has no stop button;
  - no JavaScript error;
then saves a screenshot (PNG) per preset and prints what it found. Exits non-zero when a
check fails. Not part of CI (it needs node and a Chromium); about a minute per preset.

Chromium comes from the npm registry (no browser download at install time): a folder with

    npm install @sparticuz/chromium puppeteer-core      # in a folder outside the repository, e.g. ~/chromium

(@sparticuz/chromium ships a compressed headless Chromium in the package and unpacks it
to /tmp when it starts). Then:

    python benchmarks/serve_page.py --node-modules ~/chromium/node_modules --out page
    python benchmarks/serve_page.py --node-modules ... --models rewind_tiny
    python benchmarks/serve_page.py --node-modules ... --chromium /usr/bin/chromium   # any Chromium
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import Cameras, free_port, http, longvid_script  # noqa: E402

# The browser side: puppeteer-core (CommonJS, found through NODE_PATH) and either
# @sparticuz/chromium's bundled Chromium or the executable in CHROMIUM.
DRIVER = r"""
const puppeteer = require("puppeteer-core");
// {url, screenshot, source: the stream to add through the form, questions: to type in the
//  form (LMMs, or null), every, question: to ask in the first row's box (LMMs, or null), timeout_ms}
const plan = JSON.parse(process.argv[2]);
const timeout = plan.timeout_ms;

async function launch(){
  if (process.env.CHROMIUM)
    return puppeteer.launch({executablePath: process.env.CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"]});
  const chromium = require("@sparticuz/chromium");
  return puppeteer.launch({executablePath: await chromium.executablePath(), headless: true, args: chromium.args});
}

// The table's rows as the page shows them: one object per row, cells by column name.
function rows(){
  const names = [...document.querySelectorAll("thead th")].map(th => th.textContent || "action");
  return [...document.querySelectorAll("#streams tr")].map(tr => {
    const cells = [...tr.children];
    const row = {};
    names.forEach((name, i) => { if (name !== "ask" && name !== "action") row[name] = cells[i] ? cells[i].textContent : null; });
    const box = tr.querySelector("input[type=text]");
    row.ask_box = Boolean(box);
    row.answer = box && box.nextElementSibling ? box.nextElementSibling.textContent : null;
    return row;
  });
}

async function labelled(page, count){
  await page.waitForFunction(n => {
    const trs = [...document.querySelectorAll("#streams tr")];
    return trs.length === n && trs.every(tr => tr.children[6] && tr.children[6].textContent.trim() !== "");
  }, {timeout, polling: 200}, count);
}

(async () => {
  const browser = await launch();
  const report = {errors: []};
  try {
    const page = await browser.newPage();
    page.on("pageerror", err => report.errors.push("page error: " + err.message));
    page.on("console", msg => {  // a failed request's own log line is not a page error
      if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) report.errors.push("console: " + msg.text());
    });
    await page.setViewport({width: 1280, height: 560});
    await page.goto(plan.url, {waitUntil: "load", timeout});
    await labelled(page, 1);
    report.health = await page.$eval("#health", el => el.textContent);
    report.first = await page.evaluate(rows);
    // the "add stream" form
    await page.type("#source", plan.source);
    if (plan.questions){
      await page.type("#questions", plan.questions);
      await page.$eval("#every", (el, every) => { el.value = String(every); }, plan.every);
    }
    report.form_shows_questions = await page.$eval("#lmm", el => !el.hidden);
    await page.click("#add button");
    await labelled(page, 2);
    report.add_error = await page.$eval("#add-error", el => el.textContent);
    report.source_after_add = await page.$eval("#source", el => el.value);
    if (plan.question){  // the question box of the first row: type, Enter, the reply shows under it
      const box = "#streams tr:first-child input[type=text]";
      await page.click(box);
      await page.type(box, plan.question);
      await page.keyboard.press("Enter");
      await page.waitForFunction(sel => {
        const input = document.querySelector(sel);
        return input && input.nextElementSibling && input.nextElementSibling.textContent.trim() !== "";
      }, {timeout, polling: 200}, box);
    }
    await new Promise(done => setTimeout(done, 1500));  // one more refresh of the labels
    report.rows = await page.evaluate(rows);
    await page.screenshot({path: plan.screenshot, fullPage: true});
    // the second row's stop button: the stream stops (DELETE) and stays listed as stopped, without a button
    await page.click("#streams tr:last-child button");
    await page.waitForFunction(() => {
      const last = document.querySelector("#streams tr:last-child");
      return last && last.children[2].textContent === "stopped" && !last.querySelector("button");
    }, {timeout, polling: 200});
    report.after_stop = await page.evaluate(rows);
    report.buttons_after_stop = await page.$$eval("#streams tr", trs => trs.map(tr => Boolean(tr.querySelector("button"))));
  } catch (err) {
    report.errors.push(String(err && err.message || err));
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})();
"""

LABELS = re.compile(r"^\S+ \(\d\.\d\d\)(, \S+ \(\d\.\d\d\)){0,2}$")  # "label (0.12), label (0.08), label (0.05)"
QUESTION = "what is happening?"
EVERY = 2.0  # seconds of stream time between an LMM stream's answers


def answers_questions(model: str) -> bool:
    return model.startswith(("malmm", "rewind"))


def start_server(args, model: str, port: int) -> subprocess.Popen:
    command = [longvid_script(), "serve", "--model", model, "--port", str(port), "--max-streams", "4",
               "--threads", str(args.threads), "--quiet"]
    if answers_questions(model):
        command.append("--allow-untrained")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read().strip()}")
            time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not start within 120 s")


def drive(args, plan: dict) -> dict:
    """Run the browser driver on ``plan``; what it found (see DRIVER)."""
    env = dict(os.environ, NODE_PATH=os.path.abspath(args.node_modules))
    if args.chromium:
        env["CHROMIUM"] = args.chromium
    with tempfile.TemporaryDirectory() as folder:
        driver = os.path.join(folder, "driver.cjs")
        with open(driver, "w") as f:
            f.write(DRIVER)
        done = subprocess.run(["node", driver, json.dumps(plan)], env=env, capture_output=True, text=True,
                              timeout=args.timeout * 4 + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the browser driver failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return json.loads(lines[-1])


def check(report: dict, model: str, streams: list[dict]) -> list[str]:
    """What is wrong with the page, from what the browser found and the API's own view."""
    problems = list(report.get("errors", []))
    lmm = answers_questions(model)
    if model not in (report.get("health") or ""):
        problems.append(f"the health line does not name the model: {report.get('health')!r}")
    if report.get("form_shows_questions") != lmm:
        problems.append(f"the add form {'hides' if lmm else 'shows'} the questions field for {model}")
    if report.get("add_error") or report.get("source_after_add"):
        problems.append(f"after adding a stream the form shows {report.get('add_error')!r}, source {report.get('source_after_add')!r}")
    rows = report.get("rows") or []
    if len(rows) != 2:
        problems.append(f"expected 2 rows after adding a stream through the form, found {len(rows)}")
    api = {s["id"]: s for s in streams}
    for row in rows:
        name = row.get("stream")
        if name not in api:
            problems.append(f"a row's stream id {name!r} is not one the API lists ({sorted(api)})")
            continue
        if row.get("source") != api[name]["source"]:
            problems.append(f"stream {name}: source {row.get('source')!r}, the API says {api[name]['source']!r}")
        if row.get("ask_box") != lmm:
            problems.append(f"stream {name}: {'no' if lmm else 'a'} question box")
        latest = (row.get("latest") or "").strip()
        if not (re.match(r"^.+ \u2192 .*$", latest) if lmm else LABELS.match(latest)):
            problems.append(f"stream {name}: the latest {'answer' if lmm else 'labels'} look wrong: {latest!r}")
    after_stop = [(r.get("stream"), r.get("status")) for r in report.get("after_stop") or []]
    if len(rows) == 2 and (after_stop != [(rows[0].get("stream"), "live"), (rows[1].get("stream"), "stopped")]
                           or report.get("buttons_after_stop") != [True, False]):
        problems.append(f"after the second row's stop button: rows {after_stop}, stop buttons {report.get('buttons_after_stop')}")
    if lmm:
        answer = (rows[0].get("answer") or "") if rows else ""
        if not answer.startswith(QUESTION + " \u2192 "):
            problems.append(f"the question box did not show an answer: {answer!r}")
    return problems


def check_model(args, model: str, screenshot: str) -> list[str]:
    """Serve ``model``, drive its page, and return the problems found (printing what the page showed)."""
    started = time.monotonic()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    lmm = answers_questions(model)
    server = start_server(args, model, port)
    try:
        with Cameras(2) as cameras:
            body = {"source": cameras.sources[0]}
            if lmm:
                body.update(ask=["what do you see?"], every=EVERY)
            http("POST", f"{url}/v1/streams", body)
            report = drive(args, {"url": f"{url}/", "screenshot": screenshot, "source": cameras.sources[1],
                                  "questions": "what moves?" if lmm else None, "every": EVERY,
                                  "question": QUESTION if lmm else None, "timeout_ms": int(args.timeout * 1000)})
            streams = http("GET", f"{url}/v1/streams")["streams"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"# {model} on {url}: page driven in headless Chromium, {time.monotonic() - started:.0f} s")
    print(f"health: {report.get('health')}")
    for row in report.get("rows") or report.get("first") or []:
        box = f"; question box: {row.get('answer')!r}" if row.get("ask_box") else "; no question box"
        print(f"row {row.get('stream')}: {row.get('status')}, {row.get('clips')} clips, latest: {row.get('latest')}{box}")
    for row in report.get("after_stop") or []:
        print(f"after the second row's stop button: row {row.get('stream')}: {row.get('status')}")
    problems = check(report, model, streams)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"screenshot: {screenshot}" if os.path.exists(screenshot) else "no screenshot")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", required=True, help="a node_modules folder holding puppeteer-core (and @sparticuz/chromium unless --chromium)")
    parser.add_argument("--chromium", default=None, help="a Chromium executable to use instead of @sparticuz/chromium's")
    parser.add_argument("--models", default="memvit_tiny,rewind_tiny",
                        help="presets served one after the other (default memvit_tiny,rewind_tiny: labels, then answers)")
    parser.add_argument("--out", default="serve-page", help="screenshots go to OUT-MODEL.png (default serve-page-MODEL.png)")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for each thing the page must show (default 60)")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.node_modules, "puppeteer-core")):
        raise SystemExit(f"--node-modules {args.node_modules}: no puppeteer-core there (npm install puppeteer-core @sparticuz/chromium)")
    problems = []
    for model in [m for m in args.models.split(",") if m]:
        problems += check_model(args, model, os.path.abspath(f"{args.out}-{model}.png"))
    print("page OK" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
