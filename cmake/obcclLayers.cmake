# Layer enforcement. Each layer target sees only the headers of the layers it may use: for every
# target we build a private include root under the build tree holding links to exactly those
# layers, so an include that crosses the architecture (docs/ARCHITECTURE.md) fails to compile.
#
#   obccl_layer(<target> LAYERS util topo ... TRANSPORTS tcp ...)
#
# LAYERS name folders of src/ (reached as "util/x.h"); "transports" gives transports/transport.h;
# TRANSPORTS name transport folders (reached as "transports/tcp/tcp_transport.h").
function(obccl_layer target)
  cmake_parse_arguments(ARG "" "" "LAYERS;TRANSPORTS" ${ARGN})
  set(root ${CMAKE_BINARY_DIR}/layer-include/${target})
  file(REMOVE_RECURSE ${root})
  file(MAKE_DIRECTORY ${root})
  foreach(layer IN LISTS ARG_LAYERS)
    if(layer STREQUAL "transports")
      file(MAKE_DIRECTORY ${root}/transports)
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/transports/transport.h
           ${root}/transports/transport.h SYMBOLIC)
    else()
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${layer} ${root}/${layer} SYMBOLIC)
    endif()
  endforeach()
  foreach(t IN LISTS ARG_TRANSPORTS)
    file(MAKE_DIRECTORY ${root}/transports)
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/transports/${t} ${root}/transports/${t} SYMBOLIC)
  endforeach()
  target_include_directories(${target} PRIVATE ${root})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${CMAKE_BINARY_DIR}/include>)
  target_compile_definitions(${target} PRIVATE OBCCL_BUILDING_LIBRARY=1)
endfunction()

# Tests and tools that exercise internals see every layer.
function(obccl_internal_includes target)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}
    ${PROJECT_SOURCE_DIR}/include ${CMAKE_BINARY_DIR}/include)
endfunction()
