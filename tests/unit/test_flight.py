"""A download in flight wakes its waiters on each step: those that relay
its progress to a worker process before those that send bytes themselves."""

from __future__ import annotations

import asyncio

from pkgdepot.cache import Flight


def test_relays_to_worker_processes_wake_first() -> None:
    async def main() -> list[str]:
        flight = Flight("repo/r/pool/big.deb")
        order: list[str] = []

        async def wait(name: str, relay: bool, steps: int) -> None:
            for _ in range(steps):
                await flight.wait_progress(relay=relay)
                order.append(name)

        # the local senders start waiting first, as the leader's own clients do
        tasks = [asyncio.create_task(wait(f"local{i}", False, 2)) for i in range(3)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(wait(f"relay{i}", True, 2)) for i in range(2)]
        await asyncio.sleep(0)
        for _ in range(2):  # each step wakes each waiter once
            flight.notify()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return order

    order = asyncio.run(main())
    for step in (order[:5], order[5:]):
        assert step[:2] == ["relay0", "relay1"], order
        assert sorted(step[2:]) == ["local0", "local1", "local2"], order
