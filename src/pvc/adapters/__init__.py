"""Adapters: the only code that talks to external systems (libvirt, Ceph, commands).

Each adapter is narrow, so pure logic can be tested against fakes (DESIGN D11).
"""
