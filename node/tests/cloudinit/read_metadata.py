"""Reads kiln's metadata service with cloud-init's own readers, as a guest's
cloud-init does at boot: the OpenStack layout (MetadataReader.read_v2, then
network_data.json converted to cloud-init's network config) and the EC2
layout. Prints one JSON document; any exception is a failure.

usage: read_metadata.py BASE_URL MAC
"""
import json
import sys

from cloudinit.sources.helpers import ec2, openstack


def text(b):
    return b.decode() if isinstance(b, bytes) else b


base, mac = sys.argv[1], sys.argv[2]
reader = openstack.MetadataReader(base, timeout=5, retries=0)
found = reader.read_v2()
network_config = openstack.convert_net_json(
    found["networkdata"], known_macs={mac: "eth0"}
)
ec2_meta = ec2.get_instance_metadata("latest", base, timeout=5, retries=0)
ec2_user = ec2.get_instance_userdata("latest", base, timeout=5, retries=0)
print(
    json.dumps(
        {
            "version": found.get("version"),
            "metadata": found["metadata"],
            "userdata": text(found.get("userdata")),
            "vendordata": found.get("vendordata"),
            "network_config": network_config,
            "ec2_metadata": ec2_meta,
            "ec2_userdata": text(ec2_user),
        }
    )
)
