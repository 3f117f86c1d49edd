# Writes OUTPUT: a C++ file defining spore::<SYMBOL>, a NUL-terminated
# char array holding the text of INPUT (Python source shipped by spore).
# Run at build time (cmake -P), so an edit of INPUT rebuilds it.
file(READ "${INPUT}" text)
string(FIND "${text}" ")spore_embed\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )spore_embed\"")
endif()
file(WRITE "${OUTPUT}.tmp" "// Generated from ${INPUT} by cmake/embed_text.cmake: do not edit.\nnamespace spore {\nextern const char ${SYMBOL}[];\nconst char ${SYMBOL}[] = R\"spore_embed(${text})spore_embed\";\n}  // namespace spore\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
