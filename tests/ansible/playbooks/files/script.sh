#!/bin/sh
echo "script ran with $# argument" > "$1"
