"""Stand-ins for a lab, for tests and benchmarks: a throwaway PostgreSQL server
(:mod:`testbed.postgres`), fake devices behind real OpenSSH servers, optionally in network
namespaces (:mod:`testbed.fleet`), and a tiny offline model (:mod:`testbed.models`).

A stand-in package index on loopback (:mod:`testbed.package_index`) serves bootstrap tests.

No part of the product (``orchestrator``, ``agent``, ``db``, ``tasks``) imports this
package; it imports nothing from ``tests``.
"""
