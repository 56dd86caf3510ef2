/* empty.c - the shared library's objects all come from the static archive
 * (cmake/install.cmake); CMake needs one source to make the target. */
typedef int hs_empty_translation_unit; /* ISO C wants one declaration */
