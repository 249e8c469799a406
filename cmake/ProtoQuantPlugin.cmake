# protoquant_add_plugin(NAME SOURCES...)
# Builds a plugin shared library into lib/protoquant/plugins, linked against the core.
# A plugin exports exactly two symbols (PROTOQUANT_PLUGIN in protoquant/plugin.h).
function(protoquant_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE protoquant::core)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    LIBRARY_OUTPUT_DIRECTORY ${PROTOQUANT_PLUGIN_OUTPUT_DIR}
    INSTALL_RPATH "$ORIGIN/../..")  # the core, two folders up: lib/protoquant/plugins -> lib
  protoquant_use_pch(${name})
  install(TARGETS ${name} LIBRARY DESTINATION lib/protoquant/plugins)
endfunction()

# All targets share one precompiled LibTorch header, built once by protoquant_core.
function(protoquant_use_pch target)
  if(PROTOQUANT_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM protoquant_pch)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      # The PCH is built with -fPIC; an executable's default -fPIE would make GCC ignore it.
      set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
      target_compile_options(${target} PRIVATE -fPIC)
    endif()
  endif()
endfunction()

# protoquant_openmp_source(TARGET SOURCE)
# Compiles one source of TARGET with OpenMP: ATen's inline at::parallel_for only runs in parallel
# in code built with -fopenmp (without it, it silently runs on one thread). The file skips the
# shared PCH and the unity build, which are built without -fopenmp, and links libgomp (the OpenMP
# runtime Debian's LibTorch uses; an official LibTorch bundles its own copy, loaded beside it).
# -fno-math-errno: these loops never read errno, and a sqrt that may set it keeps GCC from
# vectorising its loop at all (FusedAdam's update ran one float at a time: 0.1 ms a step).
function(protoquant_openmp_source target source)
  set_source_files_properties(${source} PROPERTIES
    COMPILE_OPTIONS "-fopenmp;-fno-math-errno"
    SKIP_PRECOMPILE_HEADERS ON
    SKIP_UNITY_BUILD_INCLUSION ON)
  target_link_options(${target} PRIVATE -fopenmp)
endfunction()
