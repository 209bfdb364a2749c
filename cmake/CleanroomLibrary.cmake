# libcleanroom: every layer's objects (and the generated protobuf-c code) in
# one static archive, for embedders; and its pkg-config file.
#
# cr_module() (CMakeLists.txt) records each layer target in the global
# property CR_LAYER_TARGETS; cr_add_library_archive() is called after the
# last cr_module() and gathers them all, so a new layer lands in the archive
# without touching this file.

# The pkg-config module for each imported target a layer may link. A layer
# linking something not listed here gets a configure warning (and the
# installed cleanroom.pc would not link): add it here.
# Listed users before what they use (libssl before libcrypto), the order
# of the Requires line.
set(CR_PC_MODULE_PkgConfig::UV        "libuv >= 1.44")
set(CR_PC_MODULE_OpenSSL::SSL         "libssl >= 3.0")
set(CR_PC_MODULE_OpenSSL::Crypto      "libcrypto >= 3.0")
set(CR_PC_MODULE_PkgConfig::JANSSON   "jansson >= 2.13")
set(CR_PC_MODULE_PkgConfig::PROTOBUFC "libprotobuf-c >= 1.4")
set(CR_PC_MODULE_PkgConfig::SODIUM    "libsodium >= 1.0.18")
set(CR_PC_MODULE_PkgConfig::PQ        "libpq >= 13")
set(CR_PC_MODULE_PkgConfig::SQLITE3   "sqlite3 >= 3.31")
set(CR_PC_MODULE_ORDER PkgConfig::UV OpenSSL::SSL OpenSSL::Crypto PkgConfig::JANSSON
    PkgConfig::PROTOBUFC PkgConfig::PQ PkgConfig::SQLITE3 PkgConfig::SODIUM)

# _cr_link_items(<out> <target>): a target's LINK_LIBRARIES and
# INTERFACE_LINK_LIBRARIES, $<LINK_ONLY:x> unwrapped, other generator
# expressions dropped.
function(_cr_link_items out tgt)
  set(items)
  get_target_property(type ${tgt} TYPE)
  if(NOT type STREQUAL "INTERFACE_LIBRARY")
    get_target_property(l ${tgt} LINK_LIBRARIES)
    if(l)
      list(APPEND items ${l})
    endif()
  endif()
  get_target_property(l ${tgt} INTERFACE_LINK_LIBRARIES)
  if(l)
    list(APPEND items ${l})
  endif()
  set(clean)
  foreach(i IN LISTS items)
    if(i MATCHES "^\\$<LINK_ONLY:([^>]+)>$")
      list(APPEND clean ${CMAKE_MATCH_1})
    elseif(NOT i MATCHES "\\$<")
      list(APPEND clean ${i})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES clean)
  set(${out} ${clean} PARENT_SCOPE)
endfunction()

# cr_link_closure(<out> <target>): every item <target> links, directly or
# through the targets it links (imported targets are not followed).
function(cr_link_closure out tgt)
  set(seen)
  set(todo ${tgt})
  while(todo)
    list(POP_FRONT todo t)
    _cr_link_items(items ${t})
    foreach(i IN LISTS items)
      if(NOT i IN_LIST seen)
        list(APPEND seen ${i})
        if(TARGET ${i})
          get_target_property(imported ${i} IMPORTED)
          if(NOT imported)
            list(APPEND todo ${i})
          endif()
        endif()
      endif()
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# cr_add_library_archive(<name>): the STATIC library <name> (libcleanroom.a)
# built from the objects of cr_proto and of every cr_module() layer. Its
# usage requirements are the public include dir and the layers' external
# dependencies; CR_PC_REQUIRES / CR_PC_LIBS (parent scope) are those
# dependencies as pkg-config wants them.
function(cr_add_library_archive name)
  get_property(layers GLOBAL PROPERTY CR_LAYER_TARGETS)
  set(parts cr_proto ${layers})
  set(objs)
  set(external)
  foreach(t IN LISTS parts)
    list(APPEND objs $<TARGET_OBJECTS:${t}>)
    cr_link_closure(closure ${t})
    foreach(i IN LISTS closure)
      if(NOT i MATCHES "^cr_" AND NOT i IN_LIST external)
        list(APPEND external ${i})
      endif()
    endforeach()
  endforeach()
  add_library(${name} STATIC ${objs})
  add_dependencies(${name} ${parts})
  set_target_properties(${name} PROPERTIES LINKER_LANGUAGE C)
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${name} INTERFACE ${external})

  set(requires)
  foreach(i IN LISTS CR_PC_MODULE_ORDER)
    if(i IN_LIST external)
      list(APPEND requires "${CR_PC_MODULE_${i}}")
    endif()
  endforeach()
  set(libs)
  foreach(i IN LISTS external)
    if(DEFINED CR_PC_MODULE_${i})
      # in requires
    elseif(i STREQUAL "Threads::Threads")
      list(APPEND libs -pthread)
    elseif(TARGET ${i} OR i MATCHES "::")
      message(WARNING "a cleanroom layer links ${i}, which cmake/CleanroomLibrary.cmake "
                      "does not map to a pkg-config module: cleanroom.pc will lack it")
    elseif(i MATCHES "^-")
      list(APPEND libs ${i})
    else()
      list(APPEND libs -l${i})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES libs)
  list(JOIN requires ", " requires)
  list(JOIN libs " " libs)
  set(CR_PC_REQUIRES "${requires}" PARENT_SCOPE)
  set(CR_PC_LIBS "${libs}" PARENT_SCOPE)
  set(CR_ARCHIVE_PARTS ${parts} PARENT_SCOPE)
endfunction()

# cr_install_pkgconfig(<pc.in>): installs cleanroom.pc into
# ${CMAKE_INSTALL_LIBDIR}/pkgconfig. It is generated at install time, so
# its prefix is the one `cmake --install --prefix P` installs to (not the
# configure-time CMAKE_INSTALL_PREFIX). An absolute CMAKE_INSTALL_LIBDIR or
# CMAKE_INSTALL_INCLUDEDIR is written as is; a relative one below the prefix.
function(cr_install_pkgconfig pc_in)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(libdir "${CMAKE_INSTALL_LIBDIR}")
  else()
    set(libdir "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
  endif()
  if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
    set(includedir "${CMAKE_INSTALL_INCLUDEDIR}")
  else()
    set(includedir "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
  endif()
  set(out "${CMAKE_CURRENT_BINARY_DIR}/cleanroom.pc")
  # Everything but the prefix is substituted now, into a template for the
  # install step.
  set(CR_PC_PREFIX "@CR_PC_PREFIX@")
  set(CR_PC_LIBDIR "${libdir}")
  set(CR_PC_INCLUDEDIR "${includedir}")
  configure_file(${pc_in} ${out}.in @ONLY)
  install(CODE "
    set(CR_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${out}.in\" \"${out}\" @ONLY)
  ")
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
