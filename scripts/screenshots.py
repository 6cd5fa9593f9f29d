#!/usr/bin/env python3
"""Screenshots of the web console for the README, taken in headless Chromium through
chromedriver's WebDriver API (no Python packages needed).

    python3 scripts/screenshots.py BASE_URL TOKEN [OUT_DIR=docs/screenshots]

BASE_URL is a running steward (for example `steward demo`, with `auth` broken so there
is something to see); TOKEN an operator or admin token. The README's images: two pages
at a phone's width (390 px), two at a laptop's (1280 px).
"""
import base64, json, os, socket, subprocess, sys, time, urllib.request

base, token = sys.argv[1].rstrip("/"), sys.argv[2]
out = sys.argv[3] if len(sys.argv) > 3 else "docs/screenshots"
os.makedirs(out, exist_ok=True)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wd = f"http://127.0.0.1:{port}"

def call(method, path, body=None):
    req = urllib.request.Request(wd + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["value"]

for _ in range(100):
    try:
        urllib.request.urlopen(wd + "/status"); break
    except OSError:
        time.sleep(0.1)
try:
    for width, height, tag in ((390, 844, "phone"), (1280, 900, "laptop")):
        options = {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}", "--hide-scrollbars"]}
        if tag == "phone":  # headless windows are at least 500 px wide; emulate the phone's viewport
            options["mobileEmulation"] = {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}}
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        sid = call("POST", "/session", caps)["sessionId"]
        call("POST", f"/session/{sid}/url", {"url": base + "/console/sign-in"})
        field = call("POST", f"/session/{sid}/element", {"using": "css selector", "value": "#token"})
        fid = list(field.values())[0]
        call("POST", f"/session/{sid}/element/{fid}/value", {"text": token})
        button = call("POST", f"/session/{sid}/element", {"using": "css selector", "value": "form button[type=submit]"})
        call("POST", f"/session/{sid}/element/{list(button.values())[0]}/click", {})
        time.sleep(1)
        pages = {"phone": (("alerts", "/console/alerts?show=muted"), ("oncall", "/console/oncall")),
                 "laptop": (("overview", "/console"), ("check", "/console/checks/auth-health?range=24h"))}[tag]
        for name, path in pages:
            call("POST", f"/session/{sid}/url", {"url": base + path})
            time.sleep(0.5)
            png = base64.b64decode(call("GET", f"/session/{sid}/screenshot"))
            with open(os.path.join(out, f"{name}-{tag}.png"), "wb") as f:
                f.write(png)
            print(f"{out}/{name}-{tag}.png")
        call("DELETE", f"/session/{sid}")
finally:
    driver.terminate()
