"""What the anchor costs in steady state, in CPU time (robust to other people's load, unlike
wall-clock rates): a private Mosquitto, one ingest subscriber in this process (no database: it
acks what it receives at once), a publisher process sending N QoS 1 telemetry messages. Prints the
subscriber process's and Mosquitto's CPU microseconds per message with and without the anchor.

    .venv/bin/python -m tests.ingest.anchor_cost [N]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from arbor import stack
from ingest.config import IngestSettings
from ingest.subscriber import Subscriber
from tests.servers import PrivateBroker

_PUBLISH = """
import sys
from tests.ingest.helpers import Publisher, telemetry
host, port, user, password, n = sys.argv[1:6]
pub = Publisher(host, int(port), user, password)
payloads = [telemetry("s1", seq, n=10) for seq in range(200)]
for i in range(int(n)):
    pub.publish(f"arbor/v1/cost/m{i % 50}/telemetry", payloads[i % 200])
    if i % 1000 == 999:
        pub.flush()
pub.close()
"""


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(broker: PrivateBroker, anchor: bool, n: int, run: int) -> tuple[float, float, int]:
    # A share group per run: an earlier run's persistent session would still be a member of the
    # group (offline), and the broker would queue a share of the messages for it.
    settings = IngestSettings(
        database_url="postgresql://unused", mqtt_url=broker.url, share_group=f"cost{run}",
        topic_filter="arbor/v1/cost/#", status_filter="", sparkplug_filter="",
        client_id_prefix="cost", anchor=anchor, session_expiry_s=60,
    )  # fmt: skip
    sub = Subscriber(settings, asyncio.get_running_loop())
    sub.start()
    deadline = time.monotonic() + 60
    while not sub.subscribed or sub.recovering:
        assert time.monotonic() < deadline, "no SUBACK / marker"
        await asyncio.sleep(0.1)
    mosquitto = stack._mqtt_running(broker.settings)
    assert mosquitto is not None
    user, password = broker.service_credentials
    c0, m0 = time.process_time(), _cpu(mosquitto)
    pub = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for at the end
        [sys.executable, "-c", _PUBLISH, broker.host, str(broker.port), user, password, str(n)]
    )
    received = 0
    deadline = time.monotonic() + 600
    while received < n or (anchor and sub.anchor_skipped < n):
        assert time.monotonic() < deadline, (received, sub.anchor_skipped)
        try:
            await asyncio.wait_for(sub.ready.wait(), 1)
        except TimeoutError:
            continue
        sub.ready.clear()
        batch = [sub.inbox.popleft() for _ in range(len(sub.inbox))]
        received += len(batch)
        sub.ack([r.ack for r in batch])
    pub.wait(60)
    cpu, mcpu = time.process_time() - c0, _cpu(mosquitto) - m0
    sub.stop()
    return cpu, mcpu, sub.anchor_skipped


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with PrivateBroker() as broker:
        for run, anchor in enumerate((False, True, False, True)):
            cpu, mcpu, skipped = asyncio.run(_run(broker, anchor, n, run))
            print(
                f"anchor={'on ' if anchor else 'off'} {n} messages: subscriber process "
                f"{cpu / n * 1e6:6.1f} us/message, mosquitto {mcpu / n * 1e6:6.1f} us/message "
                f"(anchor copies acked unprocessed: {skipped})",
                flush=True,
            )


if __name__ == "__main__":
    main()
