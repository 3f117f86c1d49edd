#!/usr/bin/python
# The arguments are substituted into the source.
import json

args = json.loads("""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>""")
print(json.dumps({"changed": False, "echo": args.get("value")}))
