"""The agents: the NIST tests replayed through monitoring, analysis and response."""
