"""Agents: the per-device state machines and handlers the monitoring, analysis and response
workers run; pure logic here, the queues and stores behind firepipe.resources."""
