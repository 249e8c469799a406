# protoquant_add_plugin(NAME SOURCES...) for a plugin built against the installed SDK
# (find_package(ProtoQuant CONFIG)): a MODULE library named NAME.so, C++17, linked against
# ProtoQuant::sdk. Load it with `protoquant --plugin NAME.so`, PROTOQUANT_PLUGIN_PATH, or a
# manifest's plugins = [...]; check it with `protoquant check-plugin NAME.so`.
# Sources use PROTOQUANT_PLUGIN(register_function) once (protoquant/plugin.h), which records the
# SDK, LibTorch, compiler and standard-library ABI the loader compares with its own.
function(protoquant_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE ProtoQuant::sdk)
  target_compile_features(${name} PRIVATE cxx_std_17)
  set_target_properties(${name} PROPERTIES PREFIX "" CXX_EXTENSIONS OFF POSITION_INDEPENDENT_CODE ON)
endfunction()
