// A shared library that is not a ProtoQuant plugin: it exports neither entry point.
extern "C" int not_a_plugin() { return 42; }
