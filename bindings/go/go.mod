module spore.dev/spore

go 1.21
