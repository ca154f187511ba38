"""The monitoring, analysis and response agents: handlers over the ports (queues, topic, state
store, notifier, escalation), run as Lambda functions (`lambdas`) or worker processes
(`worker`)."""
