"""The one place that points Fast DDS at the shipped profile."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from lens_ros.ros_env import PROFILE_ENV, configure_dds, fastdds_profile_path


def test_profile_is_set_when_the_user_has_none():
    env: dict[str, str] = {}
    path = configure_dds(env)
    assert env[PROFILE_ENV] == path == str(fastdds_profile_path())
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"


def test_users_own_profile_is_kept():
    env = {PROFILE_ENV: "/etc/my_profile.xml", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert configure_dds(env) == "/etc/my_profile.xml"
    assert env["RMW_IMPLEMENTATION"] == "rmw_cyclonedds_cpp"


def test_shipped_profile_has_large_message_transports():
    ns = {"d": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(fastdds_profile_path()).getroot()
    descriptors = {d.find("d:transport_id", ns).text: d for d in root.iter(f"{{{ns['d']}}}transport_descriptor")}
    shm = next(d for d in descriptors.values() if d.find("d:type", ns).text == "SHM")
    assert int(shm.find("d:segment_size", ns).text) >= 8 * 1024 * 1024
    udp = next(d for d in descriptors.values() if d.find("d:type", ns).text == "UDPv4")
    assert int(udp.find("d:maxMessageSize", ns).text) <= 65500  # Fast DDS 3 rejects larger UDP datagrams
    assert int(udp.find("d:receiveBufferSize", ns).text) >= 4 * 1024 * 1024
    assert [a.text for a in udp.iter(f"{{{ns['d']}}}address")] == ["127.0.0.1"]
    participant = root.find(".//d:participant", ns)
    assert participant.find(".//d:useBuiltinTransports", ns).text == "false"
