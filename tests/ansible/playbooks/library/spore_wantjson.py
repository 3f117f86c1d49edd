#!/usr/bin/python
# WANT_JSON: the arguments come as a JSON file named by argv[1].
import json
import sys

with open(sys.argv[1]) as f:
    args = json.load(f)
print(json.dumps({"changed": False, "echo": args.get("value")}))
