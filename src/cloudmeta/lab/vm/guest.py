"""What the lab's image carries besides Debian's packages: a boot report and the KVM probe.

Neither touches cloud-init's configuration: the report only *reads* what cloud-init did, after
its ``final`` stage, and prints it as one line on the serial console for ``lab status``. The
guest finds the metadata service exactly as on a real cloud.
"""

from __future__ import annotations

__all__ = ["KVM_PROBE_MARKER", "PROBE_SCRIPT", "REPORT_MARKER", "REPORT_SCRIPT", "REPORT_UNIT"]

REPORT_MARKER = "CMT-LAB-REPORT"
KVM_PROBE_MARKER = "CMT-KVM-PROBE-OK"

REPORT_SCRIPT = r'''#!/usr/bin/python3
"""cloudmeta lab: after cloud-init's final stage, print what it did as one line on ttyS0."""
import json
import socket
import subprocess
import time


def out(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def packages():
    try:
        import yaml
        with open("/var/lib/cloud/instance/cloud-config.txt") as f:
            names = (yaml.safe_load(f) or {}).get("packages") or []
    except (OSError, ValueError, ImportError, AttributeError):
        return {}
    names = [n if isinstance(n, str) else n[0] for n in names if n]
    return {n: out("dpkg-query", "-W", "-f=${Version}", n) or None for n in names}


def password_set(user):
    try:
        with open("/etc/shadow") as f:
            for line in f:
                fields = line.split(":")
                if fields[0] == user:
                    return fields[1].startswith("$")
    except OSError:
        pass
    return False


status = load("/run/cloud-init/status.json").get("v1", {})
result = load("/run/cloud-init/result.json").get("v1", {})
final = status.get("modules-final") or {}
try:
    route = json.loads(out("ip", "-j", "-4", "route", "get", "169.254.169.254") or "[]")
except ValueError:
    route = []
try:
    links = json.loads(out("ip", "-j", "-4", "addr", "show", "scope", "global") or "[]")
except ValueError:
    links = []
report = {
    "hostname": socket.gethostname(),
    "ips": [a["local"] for link in links for a in link.get("addr_info", [])],
    "metadata_via": route[0].get("gateway") if route else None,
    "routes": out("ip", "-4", "route"),
    "password_set": password_set("debian"),
    "packages": packages(),
    "datasource": result.get("datasource"),
    "errors": [str(e) for e in result.get("errors", [])],
    "cloud_init_ran": bool(status),
    "final_finished": final.get("finished"),
    "time": time.time(),
    "uptime": float(open("/proc/uptime").read().split()[0]),
}
with open("/dev/ttyS0", "w") as tty:
    tty.write("\n%s %s\n" % ("CMT-LAB-REPORT", json.dumps(report, separators=(",", ":"))))
'''

REPORT_UNIT = """[Unit]
Description=cloudmeta lab: report what cloud-init did on the serial console
After=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cmt-lab-report
RemainAfterExit=yes

[Install]
WantedBy=cloud-init.target
"""

# Run as init= by the KVM probe: the marker proves a stock kernel reached user space.
PROBE_SCRIPT = f"""#!/bin/sh
echo {KVM_PROBE_MARKER} > /dev/ttyS0
exec /sbin/poweroff -f
"""
