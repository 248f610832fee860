// Everything a user of dcp++ core needs.
#pragma once

#include "dcp/async_save.h"
#include "dcp/checkpoint.h"
#include "dcp/collectives.h"
#include "dcp/convert.h"
#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/logging.h"
#include "dcp/memory_storage.h"
#include "dcp/metadata.h"
#include "dcp/planner.h"
#include "dcp/replicas.h"
#include "dcp/storage.h"
#include "dcp/value.h"
#include "dcp/version.h"
