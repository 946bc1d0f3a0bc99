# Writes OUT, a C file holding every persona under SRC/*.yaml as
# struct persona_builtin entries, so an installed skynet needs no file beside it.
file(WRITE ${OUT} "/* generated from persona/ — do not edit */\n#include <stddef.h>\nstruct persona_builtin { const char *name; const char *yaml; };\n")
file(GLOB files ${SRC}/*.yaml)
list(SORT files)
file(APPEND ${OUT} "const struct persona_builtin persona_builtins[] = {\n")
foreach(f ${files})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} body HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" body "${body}")
  string(REGEX REPLACE "((\\\\x[0-9a-f][0-9a-f]){40})" "\\1\"\n\"" body "${body}")
  file(APPEND ${OUT} "  {\"${name}\",\n\"${body}\"},\n")
endforeach()
file(APPEND ${OUT} "  {NULL, NULL}\n};\n")
