"""A Pulumi program over an in-process test provider: a component with children, depends_on
and every option the engine honours. THINGS_SIZE and THINGS_DROP change it between runs."""

import os

import pulumi


class Thing(pulumi.CustomResource):
    def __init__(self, name, props, opts=None):
        super().__init__("testprog:index:Thing", name, props, opts)


class Pair(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("testprog:index:Pair", name, None, opts)
        self.left = Thing(f"{name}-left", {"size": 1}, pulumi.ResourceOptions(parent=self))
        self.right = Thing(f"{name}-right", {"size": 1, "peer": self.left.id},
                           pulumi.ResourceOptions(parent=self, depends_on=[self.left]))
        self.register_outputs({})


size = int(os.environ.get("THINGS_SIZE", "1"))
base = Thing("base", {"size": size, "zone": os.environ.get("THINGS_ZONE", "a"), "note": os.environ.get("THINGS_NOTE", "x")},
             pulumi.ResourceOptions(ignore_changes=["note"], replace_on_changes=["zone"], delete_before_replace=True))
Pair("pair", pulumi.ResourceOptions(depends_on=[base]))
if not os.environ.get("THINGS_DROP"):
    Thing("keeper", {"size": 1}, pulumi.ResourceOptions(retain_on_delete=True))
if os.environ.get("THINGS_PROTECT"):
    Thing("guarded", {"size": 1}, pulumi.ResourceOptions(protect=True))
