"""Servers and helpers the tests share (real upstreams, the test OpenID provider, processes)."""
