# cmake -DIN=<file> -DOUT=<file.cc> -DNAME=<C++ name> -DNAMESPACE=<ns> -P embed.cmake
# Writes a C++ source defining `const std::string_view NAMESPACE::NAME` that
# holds IN's bytes exactly (as a hex array: no escaping rule to get wrong).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR bytes "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n" hex "${hex}")
get_filename_component(in_name "${IN}" NAME)
file(WRITE "${OUT}.tmp"
"// Generated from ${in_name} by embed.cmake at build time: do not edit.\n"
"#include <string_view>\n"
"namespace ${NAMESPACE} {\n"
"namespace {\n"
"const unsigned char kBytes[${bytes} + 1] = {\n${hex}0};\n"
"}  // namespace\n"
"extern const std::string_view ${NAME};\n"
"const std::string_view ${NAME}(reinterpret_cast<const char*>(kBytes), ${bytes});\n"
"}  // namespace ${NAMESPACE}\n")
# Only a changed result touches OUT (no rebuild for an unchanged page).
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
