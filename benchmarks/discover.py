"""Discovery time for a domain with 2 hosts x 4 ports on the lab (issue 15).

The zone ``bench.test`` (dnsmasq) publishes both hosts by SRV (``_pop3._tcp`` and
``_pop3s._tcp`` on each) and an autoconfig document (HTTP on loopback); each host has four
POP3 ports probed: the two published ones plus two unpublished ones given as ``ports``
(two Dovecot instances, plaintext/STLS and implicit TLS each). One ``discover()`` call is
one measurement: SRV + autoconfig + 8 port probes, concurrently, within one deadline.

    python benchmarks/discover.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _common import print_machine  # also puts the checkout on sys.path
from pop3mon.engine.discovery import DiscoverySpec, discover

from pop3mon_lab.autoconfig_http import AUTOCONFIG_PATH, AutoconfigServer, config_xml
from pop3mon_lab.certs import generate_lab_certs
from pop3mon_lab.dnsmasq import DnsLab, Srv
from pop3mon_lab.dovecot import DovecotLab

ZONE = "bench.test"
HOSTS = (f"mail1.{ZONE}", f"mail2.{ZONE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        certs = generate_lab_certs(tmp, hostname=HOSTS[0], extra_names=[HOSTS[1]])
        with DovecotLab(certs, extra_instances={"other": "valid"}) as lab:
            a = lab.ports("valid")
            b = lab.ports("other")
            srv = [
                Srv(f"_pop3._tcp.{ZONE}", HOSTS[0], a.pop3),
                Srv(f"_pop3s._tcp.{ZONE}", HOSTS[0], a.pop3s),
                Srv(f"_pop3._tcp.{ZONE}", HOSTS[1], a.pop3, 1),
                Srv(f"_pop3s._tcp.{ZONE}", HOSTS[1], a.pop3s, 1),
            ]
            hosts = {h: "127.0.0.1" for h in (*HOSTS, f"autoconfig.{ZONE}", ZONE)}
            doc = config_xml(ZONE, incoming=[(HOSTS[1], a.pop3s, "SSL")])
            with (
                DnsLab(zones=[ZONE], srv=srv, hosts=hosts) as dns,
                AutoconfigServer({AUTOCONFIG_PATH: doc}) as http,
            ):
                spec = DiscoverySpec(
                    domain=ZONE,
                    ports=(b.pop3, b.pop3s),
                    tls_ports=(b.pop3s,),
                    nameserver=dns.nameserver,
                    autoconfig_port=http.port,
                    autoconfig_schemes=("http",),
                    timeout=20.0,
                    ca_file=str(certs.ca_file),
                )
                walls = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    found = discover(spec)
                    walls.append(time.perf_counter() - t0)
                    answered = sum(o.answered for o in found.offered)
                    assert len(found.offered) == 8 and answered == 8, found
                print(
                    f"\n| hosts x ports | runs | median wall | min | max |\n|---|---|---|---|---|\n"
                    f"| 2 x 4 | {args.runs} | {statistics.median(walls) * 1000:.0f} ms | "
                    f"{min(walls) * 1000:.0f} ms | {max(walls) * 1000:.0f} ms |"
                )


if __name__ == "__main__":
    main()
