/* engine/ledger/pq_dl.h — libpq through dlopen(): the skynet binary does not
 * link libpq, so an SQLite-only install neither needs nor maps it (about
 * 3 MB of shared libraries less and a faster start).  pg.c includes this after
 * <libpq-fe.h>: every PQ* name it calls becomes an entry of the table that
 * pq_dl_load() fills on the first postgresql:// connection.
 *
 * To use one more libpq function in pg.c: add X(PQname) to PQ_DL_FUNCS and a
 * "#define PQname (pq_dl.p_PQname)" line below.  A function left out shows at
 * link time (an undefined reference to PQname), never at run time.  One that
 * older libpq versions lack goes in PQ_DL_OPTIONAL instead, and its caller
 * checks it for NULL.
 *
 * Thread contract: pq_dl_load() may be called from any thread, any number of
 * times; the table is written once (under a pthread_once) and only read after. */
#ifndef SKYNET_PQ_DL_H
#define SKYNET_PQ_DL_H

#include <stddef.h>

#include <libpq-fe.h>

#include "../err.h"

#define PQ_DL_FUNCS(X)                                                        \
  X(PQclear) X(PQcmdTuples) X(PQconnectdb) X(PQconsumeInput) X(PQerrorMessage) \
  X(PQexec) X(PQexecParams) X(PQfinish) X(PQfreemem) X(PQgetisnull)           \
  X(PQgetvalue) X(PQnotifies) X(PQntuples) X(PQreset) X(PQresultErrorMessage) \
  X(PQresultStatus) X(PQsetNoticeProcessor) X(PQsocket) X(PQstatus)           \
  X(PQtransactionStatus) X(PQresultErrorField) X(PQnfields) X(PQgetlength)    \
  X(PQescapeLiteral) X(PQescapeIdentifier) X(PQsendQuery) X(PQgetResult)      \
  X(PQisBusy) X(PQflush) X(PQsetnonblocking) X(PQserverVersion) X(PQprepare)  \
  X(PQexecPrepared)

/* Functions of newer libpq versions (pipeline mode: 14): NULL when the
 * installed libpq lacks them, and pg.c does without. */
#define PQ_DL_OPTIONAL(X)                                                     \
  X(PQenterPipelineMode) X(PQexitPipelineMode) X(PQpipelineSync)              \
  X(PQsendQueryParams) X(PQsendQueryPrepared) X(PQsendPrepare)

struct pq_dl_table {
#define PQ_DL_FIELD(name) __typeof__(&name) p_##name;
  PQ_DL_FUNCS(PQ_DL_FIELD)
  PQ_DL_OPTIONAL(PQ_DL_FIELD)
#undef PQ_DL_FIELD
};

extern struct pq_dl_table pq_dl;

/* Loads libpq.so.5 and fills pq_dl once per process.  On failure errbuf says
 * "PostgreSQL support needs libpq5 (libpq.so.5): <dlerror>" and it answers
 * ERR_UNAVAILABLE (again on every later call). */
enum err pq_dl_load(char *errbuf, size_t errlen);

#define PQclear (pq_dl.p_PQclear)
#define PQcmdTuples (pq_dl.p_PQcmdTuples)
#define PQconnectdb (pq_dl.p_PQconnectdb)
#define PQconsumeInput (pq_dl.p_PQconsumeInput)
#define PQerrorMessage (pq_dl.p_PQerrorMessage)
#define PQexec (pq_dl.p_PQexec)
#define PQexecParams (pq_dl.p_PQexecParams)
#define PQfinish (pq_dl.p_PQfinish)
#define PQfreemem (pq_dl.p_PQfreemem)
#define PQgetisnull (pq_dl.p_PQgetisnull)
#define PQgetvalue (pq_dl.p_PQgetvalue)
#define PQnotifies (pq_dl.p_PQnotifies)
#define PQntuples (pq_dl.p_PQntuples)
#define PQreset (pq_dl.p_PQreset)
#define PQresultErrorMessage (pq_dl.p_PQresultErrorMessage)
#define PQresultStatus (pq_dl.p_PQresultStatus)
#define PQsetNoticeProcessor (pq_dl.p_PQsetNoticeProcessor)
#define PQsocket (pq_dl.p_PQsocket)
#define PQstatus (pq_dl.p_PQstatus)
#define PQtransactionStatus (pq_dl.p_PQtransactionStatus)
#define PQresultErrorField (pq_dl.p_PQresultErrorField)
#define PQnfields (pq_dl.p_PQnfields)
#define PQgetlength (pq_dl.p_PQgetlength)
#define PQescapeLiteral (pq_dl.p_PQescapeLiteral)
#define PQescapeIdentifier (pq_dl.p_PQescapeIdentifier)
#define PQsendQuery (pq_dl.p_PQsendQuery)
#define PQgetResult (pq_dl.p_PQgetResult)
#define PQisBusy (pq_dl.p_PQisBusy)
#define PQflush (pq_dl.p_PQflush)
#define PQsetnonblocking (pq_dl.p_PQsetnonblocking)
#define PQserverVersion (pq_dl.p_PQserverVersion)
#define PQprepare (pq_dl.p_PQprepare)
#define PQexecPrepared (pq_dl.p_PQexecPrepared)
#define PQenterPipelineMode (pq_dl.p_PQenterPipelineMode)
#define PQexitPipelineMode (pq_dl.p_PQexitPipelineMode)
#define PQpipelineSync (pq_dl.p_PQpipelineSync)
#define PQsendQueryParams (pq_dl.p_PQsendQueryParams)
#define PQsendQueryPrepared (pq_dl.p_PQsendQueryPrepared)
#define PQsendPrepare (pq_dl.p_PQsendPrepare)

#endif
