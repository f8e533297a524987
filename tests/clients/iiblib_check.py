"""Drive iib with the iiblib client from PyPI, over HTTPS: its models must parse our answers.

Usage: iiblib_check.py HOST:PORT CA_BUNDLE USER
Prints one line per check and exits non-zero on the first failure.
"""
import sys

from iiblib.iib_client import IIBClient
from iiblib.iib_build_details_model import AddModel, RmModel

host, ca_bundle, user = sys.argv[1:4]
client = IIBClient(host, ssl_verify=ca_bundle, retries=0)
# The authenticating proxy in front of iib sets this header; here the test stands in for it.
client.iib_session.session.headers["X-Remote-User"] = user

added = client.add_bundles(
    "registry.example.com/index:v4.18",
    ["registry.example.com/kube-green-bundle:0.7.1"],
    ["amd64", "s390x"],
    binary_image="registry.example.com/opm:v4.18",
    build_tags=["v4.18-nightly"],
)
assert isinstance(added, AddModel), type(added)
assert added.state == "in_progress", added.state
assert added.bundles == ["registry.example.com/kube-green-bundle:0.7.1"], added.bundles
assert added.from_index == "registry.example.com/index:v4.18"
assert added.user == user, added.user
print("add", added.id, added.state)

removed = client.remove_operators(
    "registry.example.com/index:v4.18",
    ["kube-green"],
    ["amd64"],
    binary_image="registry.example.com/opm:v4.18",
)
assert isinstance(removed, RmModel), type(removed)
assert removed.removed_operators == ["kube-green"], removed.removed_operators
print("rm", removed.id, removed.state)

fetched = client.get_build(added.id)
assert isinstance(fetched, AddModel), type(fetched)
assert fetched.id == added.id and fetched.batch == added.batch
assert fetched.state_history[0]["state"] == "in_progress"
print("get_build", fetched.id, fetched.request_type)

pager = client.get_builds()
ids = [build.id for build in pager.items()]
assert ids == [removed.id, added.id], ids
assert all(build.request_type in ("add", "rm") for build in pager.items())
print("get_builds", ids)
print("iiblib OK")
