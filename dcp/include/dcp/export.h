// What dcp++'s shared libraries export.
//
// The libraries are built with hidden visibility (-fvisibility=hidden
// -fvisibility-inlines-hidden, cmake/dcpLibrary.cmake): only what is marked
// here is part of a library's ABI. Every public class and non-inline free
// function of the installed headers carries the macro of the library that
// defines it; classes are marked whole, so that their typeinfo and vtables
// are shared with the program (catching a dcp::CheckpointError by type,
// subclassing Stateful, StorageWriter or a planner, dynamic_cast across the
// boundary). Code of the libraries' src/ folders lives in namespace
// dcp::internal and is never marked (tests/visibility checks the built
// libraries).
//
// One macro per library, each switched by its own DCP_<LIB>_BUILDING, which
// only that library's sources define: a header of dcp::manager includes
// dcp::core's headers, so in one translation unit the manager's declarations
// are the ones being built and core's are imported. On ELF both mean
// visibility("default"); on Windows they would be dllexport and dllimport.
#pragma once

#if defined(_WIN32) || defined(__CYGWIN__)
#define DCP_SYMBOL_EXPORT_ __declspec(dllexport)
#define DCP_SYMBOL_IMPORT_ __declspec(dllimport)
#elif defined(__GNUC__) || defined(__clang__)
// The attribute in its C++11 spelling: it may follow another attribute
// (class [[nodiscard]] DCP_CORE_EXPORT AsyncSaveHandle), which
// __attribute__((...)) may not.
#define DCP_SYMBOL_EXPORT_ [[gnu::visibility("default")]]
#define DCP_SYMBOL_IMPORT_ [[gnu::visibility("default")]]
#else
#define DCP_SYMBOL_EXPORT_
#define DCP_SYMBOL_IMPORT_
#endif

// dcp::core (dcp/include/dcp/*.h)
#ifdef DCP_CORE_BUILDING
#define DCP_CORE_EXPORT DCP_SYMBOL_EXPORT_
#else
#define DCP_CORE_EXPORT DCP_SYMBOL_IMPORT_
#endif

// dcp::manager (manager/include/dcp/manager/*.h)
#ifdef DCP_MANAGER_BUILDING
#define DCP_MANAGER_EXPORT DCP_SYMBOL_EXPORT_
#else
#define DCP_MANAGER_EXPORT DCP_SYMBOL_IMPORT_
#endif

// dcp::dist (integrations/include/dcp/dist/process_group.h)
#ifdef DCP_DIST_BUILDING
#define DCP_DIST_EXPORT DCP_SYMBOL_EXPORT_
#else
#define DCP_DIST_EXPORT DCP_SYMBOL_IMPORT_
#endif

// dcp::libtorch (integrations/include/dcp/libtorch/{data,module,optimizer,progress,rng}.h)
#ifdef DCP_LIBTORCH_BUILDING
#define DCP_LIBTORCH_EXPORT DCP_SYMBOL_EXPORT_
#else
#define DCP_LIBTORCH_EXPORT DCP_SYMBOL_IMPORT_
#endif

// dcp::trainer (integrations/include/dcp/trainer/trainer.h)
#ifdef DCP_TRAINER_BUILDING
#define DCP_TRAINER_EXPORT DCP_SYMBOL_EXPORT_
#else
#define DCP_TRAINER_EXPORT DCP_SYMBOL_IMPORT_
#endif
