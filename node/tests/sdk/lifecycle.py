"""openstacksdk against a kiln all-in-one (simulated node): compute, image,
network and block storage through the SDK's own proxies, as a user's script
or Ansible's modules would drive them. Exits non-zero on the first surprise."""
import hashlib
import os
import sys

import openstack
from openstack import exceptions


def check(cond, what):
    if not cond:
        sys.exit(f"sdk check failed: {what}")


conn = openstack.connect(
    auth_url=os.environ["OS_AUTH_URL"],
    username=os.environ["OS_USERNAME"],
    password=os.environ["OS_PASSWORD"],
    project_name=os.environ["OS_PROJECT_NAME"],
    user_domain_name=os.environ["OS_USER_DOMAIN_NAME"],
    project_domain_name=os.environ["OS_PROJECT_DOMAIN_NAME"],
    region_name=os.environ.get("OS_REGION_NAME"),
)

# Image: upload, download the same bytes, hashes.
data = os.urandom(256 * 1024) + b"kiln"
image = conn.image.create_image(
    name="sdk-img", data=data, disk_format="raw", container_format="bare",
    allow_duplicates=True,
)
image = conn.image.get_image(image.id)
check(image.status == "active", f"image status {image.status}")
check(image.hash_value == hashlib.sha512(data).hexdigest(), "os_hash_value")
got = conn.image.download_image(image).content
check(got == data, "download returns the uploaded bytes")

# Compute: flavors, a generated keypair, a server through its life.
flavor = conn.compute.find_flavor("m1.tiny")
check(flavor is not None and flavor.vcpus >= 1, "m1.tiny")
kp = conn.compute.create_keypair(name="sdk-key")
check(kp.private_key and "PRIVATE KEY" in kp.private_key, "generated private key")

net = conn.network.create_network(name="sdk-net")
subnet = conn.network.create_subnet(
    network_id=net.id, ip_version=4, cidr="10.61.0.0/24", name="sdk-sub")
check(subnet.gateway_ip == "10.61.0.1", f"gateway {subnet.gateway_ip}")
sg = conn.network.create_security_group(name="sdk-sg")
conn.network.create_security_group_rule(
    security_group_id=sg.id, direction="ingress", protocol="icmp")
conn.network.create_security_group_rule(
    security_group_id=sg.id, direction="ingress", protocol="tcp",
    port_range_min=22, port_range_max=22, remote_group_id=sg.id)
try:
    conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", protocol="icmp")
    check(False, "a duplicate rule is refused")
except exceptions.ConflictException:
    pass

server = conn.compute.create_server(
    name="sdk-vm", image_id=image.id, flavor_id=flavor.id,
    networks=[{"uuid": net.id}], key_name=kp.name,
    security_groups=[{"name": "sdk-sg"}], metadata={"role": "sdk"})
server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
check("sdk-net" in server.addresses, f"addresses {server.addresses}")
ports = list(conn.network.ports(device_id=server.id))
check(len(ports) == 1 and sg.id in ports[0].security_group_ids, "server port in sdk-sg")
conn.compute.stop_server(server)
conn.compute.wait_for_server(server, status="SHUTOFF", wait=60, interval=0.5)
conn.compute.start_server(server)
conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
conn.compute.set_server_metadata(server, tier="web")
meta = conn.compute.get_server_metadata(server).metadata
check(meta.get("tier") == "web" and meta.get("role") == "sdk", f"metadata {meta}")
try:
    conn.compute.get_server("not-a-server")
    check(False, "a name in an id slot is 404")
except exceptions.NotFoundException:
    pass

# Block storage: a volume attached to the server and detached again, a snapshot.
vol = conn.block_storage.create_volume(size=1, name="sdk-vol")
vol = conn.block_storage.wait_for_status(vol, status="available", wait=60, interval=0.5)
conn.compute.create_volume_attachment(server, volume_id=vol.id)
vol = conn.block_storage.wait_for_status(vol, status="in-use", wait=60, interval=0.5)
attached = [a.volume_id for a in conn.compute.volume_attachments(server)]
check(attached == [vol.id], f"attachments {attached}")
conn.compute.delete_volume_attachment(server, vol.id)
vol = conn.block_storage.wait_for_status(vol, status="available", wait=60, interval=0.5)
snap = conn.block_storage.create_snapshot(volume_id=vol.id, name="sdk-snap")
conn.block_storage.wait_for_status(snap, status="available", wait=60, interval=0.5)
conn.block_storage.delete_snapshot(snap)
conn.block_storage.wait_for_delete(snap, wait=60, interval=0.5)

# Routers and floating IPs on an admin's external network.
ext = conn.network.create_network(name="sdk-ext", is_router_external=True)
conn.network.create_subnet(network_id=ext.id, ip_version=4, cidr="198.51.100.0/24")
router = conn.network.create_router(
    name="sdk-r", external_gateway_info={"network_id": ext.id})
conn.network.add_interface_to_router(router, subnet_id=subnet.id)
fip = conn.network.create_ip(floating_network_id=ext.id)
conn.network.update_ip(fip, port_id=ports[0].id)
check(conn.network.get_ip(fip.id).fixed_ip_address == ports[0].fixed_ips[0]["ip_address"],
      "floating IP associated")
conn.network.delete_ip(fip)

# Tear down.
conn.compute.delete_server(server)
conn.compute.wait_for_delete(server, wait=60, interval=0.5)
conn.block_storage.delete_volume(vol)
conn.block_storage.wait_for_delete(vol, wait=60, interval=0.5)
conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
conn.network.delete_router(router)
conn.network.delete_security_group(sg)
conn.network.delete_network(net)
conn.network.delete_network(ext)
conn.compute.delete_keypair(kp)
conn.image.delete_image(image)
print("sdk ok")
