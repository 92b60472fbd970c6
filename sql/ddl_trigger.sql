-- Every DDL command notifies the proxies (pgrules._notify_ddl, in
-- functions.sql), so that they reload their catalogs at its commit. Only a
-- superuser may create an event trigger: Install runs this file for one.
DROP EVENT TRIGGER IF EXISTS pgrules_ddl;
CREATE EVENT TRIGGER pgrules_ddl ON ddl_command_end EXECUTE FUNCTION pgrules._notify_ddl();
